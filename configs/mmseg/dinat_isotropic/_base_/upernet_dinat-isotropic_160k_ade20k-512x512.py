# UperNet, 160k iterations, ADE20K 512x512 crops, with a zoo isotropic NAT / DiNAT / ViT-rpb backbone (the family
# base; variants set model_name, drop_path_rate, the checkpoint and the neck's / heads' channels).
#
# Recipe: the official repository has no det/seg models for the isotropic variants (its segmentation/ folder builds
# only the hierarchical NAT / DiNAT), so this is mmseg's own plain-ViT UperNet
# (configs/vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py on _base_/models/upernet_vit-b16_ln_mln.py):
# the outputs of blocks 2, 5, 8 and 11 (all at stride 16; the model's det/seg hook, QuarterBlocksHook),
# MultiLevelNeck rescaling them by 4, 2, 1, 0.5 into a pyramid; AdamW lr 6e-5, weight decay 0.01, no weight decay
# on 'rpb' and norms, linear warm-up over 1500 iterations then poly decay (power 1) to 0, 16 images per iteration
# (8 GPUs x 2).
# Deviation from mmseg's ViT recipe: a LayerNorm (eps 1e-5, as the models' own norms) on each of the four outputs
# (out_norm=True): the blocks are pre-norm, so their outputs are the un-normalised residual stream (mmseg's ViT
# normalises only its last output).
# The 512 crops give a 32x32 token map: NA (k = 7, DiNAT's odd layers d = 2, k * d = 14) runs unpadded there;
# ViT-rpb resizes its 27x27 relative-position table bicubically to the 63x63 offsets of the larger map.
# Pass dilation=<d> in the backbone dict to widen DiNAT's dilated layers for the larger map (the hierarchical
# DiNAT's seg configs do so per stage); the default keeps the ImageNet value the weights were trained with.
_base_ = [
    'mmseg::_base_/models/upernet_vit-b16_ln_mln.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_dinat_isotropic_small',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,
        drop_path_rate=0.1,  # the ImageNet value of the small models (mmseg's DeiT-S UperNet uses 0.1 too)
        out_norm=True,
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://shi-labs.com/projects/dinat/checkpoints/isotropic/dinat_isotropic_small_in1k_224.pth')),
    neck=dict(type='MultiLevelNeck', in_channels=[384, 384, 384, 384], out_channels=384, scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[384, 384, 384, 384], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'rpb': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
