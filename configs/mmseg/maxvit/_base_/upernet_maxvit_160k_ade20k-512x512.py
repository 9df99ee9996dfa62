# UperNet, 160k iterations, ADE20K 512x512 crops, with a zoo MaxViT backbone (the family base; variants set
# model_name, drop_path_rate, the checkpoint and the heads' in_channels).
#
# Recipe: the MaxViT authors published no segmentation recipe (google-research/maxvit issue #5), so this is
# mmseg's Swin-T UperNet recipe (configs/swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py):
# AdamW lr 6e-5, weight decay 0.01, no weight decay on norms and relative-position tables, linear warm-up over
# 1500 iterations then poly decay (power 1) to 0, 16 images per iteration (8 GPUs x 2).
# BatchNorm: norm_eval=True keeps MaxViT's BatchNorm statistics frozen (2 images per GPU; the backbone's
# BatchNorms are not SyncBN). The heads keep mmseg's SyncBN.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_maxvit_tiny',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=True,
        drop_path_rate=0.2,
        out_norm=True,
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/maxvit_tiny_tf_224.in1k/resolve/main/model.safetensors')),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))  # in_index=2: the stride-16 stage

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
