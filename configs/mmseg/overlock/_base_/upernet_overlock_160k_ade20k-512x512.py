# UperNet, 160k iterations, ADE20K 512x512 crops, with a zoo OverLoCK backbone (the family base; variants set
# model_name, drop_path_rate, the checkpoint and the heads' in_channels).
#
# Recipe: the official one (LMMMEng/OverLoCK segmentation/configs/overlock/upernet_overlock_tiny_ade20k_8xb2.py,
# mmseg 0.30), composed from mmseg 1.2's base configs (upernet_r50: UPerHead 512 channels, FCN auxiliary head on
# output 2 with loss weight 0.4, SyncBN heads): AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01, no weight decay
# on parameters named *norm*, linear warm-up over 1500 iterations from 1e-6 then poly decay (power 1) to 0,
# 160k iterations, 16 images per iteration (8 GPUs x 2), no AMP.
# Backbone: the official segmentation backbone (in1k weights; extra_norm.{0-3}, no context added back: the
# default dense_context=False); outputs C1, C2, C3 + C4/4, C4 + C4/4. BatchNorm: officially SyncBN and trained;
# sync_bn='torch' with mmengine's runner.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)
sync_bn = 'torch'

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_overlock_t',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,
        drop_path_rate=0.2,
        out_norm=True,
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/LMMMEng/OverLoCK/releases/download/v1/overlock_t_in1k_224.pth')),
    decode_head=dict(in_channels=[64, 128, 384, 640], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))  # in_index=2: the stride-16 output

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
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
