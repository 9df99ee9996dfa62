# UperNet, 160k iterations, ADE20K 512x512 crops, with a zoo Sparsifiner backbone (the family base; variants set
# model_name, drop_path_rate, the checkpoint and the neck's / heads' channels).
#
# Recipe: the Sparsifiner authors published no segmentation recipe (the paper has no ADE20K results), so this is
# mmseg's own plain-ViT UperNet (configs/vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py on
# _base_/models/upernet_vit-b16_ln_mln.py): the outputs of blocks 2, 5, 8 and 11 (all at stride 16, the hook
# SparsifinerDenseHook), no output norms (mmseg's ViT has final_norm=False), MultiLevelNeck rescaling them by
# 4, 2, 1, 0.5 into a pyramid; AdamW lr 6e-5, weight decay 0.01, no weight decay on pos_embed, cls_token and norms,
# linear warm-up over 1500 iterations then poly decay (power 1) to 0, 16 images per iteration (8 GPUs x 2).
# The 512x512 crops run the Sparsifiner at a 32x32 patch grid: pos_embed and the predictors' token projections are
# resampled from the 224 training grid (models/sparsifiner.py), the keep rate (0.25) applies to the 1025 tokens.
# Weights: no Sparsifiner weights were released; the default checkpoint is the DeiT backbone (the predictors then
# start untrained): point init_cfg.checkpoint at your trained Sparsifiner (the cls_distill phase's checkpoint).
# Detection: none (mmdet 3.3 ships no ViTDet simple pyramid for a plain ViT; FAMILY.tasks).
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
        model_name='vz_sparsifiner_deit_small',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,
        drop_path_rate=0.1,  # mmseg's DeiT-S UperNet (vit_deit-s16_upernet_8xb2-160k_ade20k-512x512.py)
        out_norm=False,
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/deit_small_patch16_224.fb_in1k/resolve/main/model.safetensors')),
    neck=dict(type='MultiLevelNeck', in_channels=[384, 384, 384, 384], out_channels=384, scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[384, 384, 384, 384], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'pos_embed': dict(decay_mult=0.),
        'cls_token': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
