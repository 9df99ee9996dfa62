# Mask R-CNN + FPN, 1x schedule, COCO, with a zoo OverLoCK backbone (the family base; variants set model_name,
# drop_path_rate, the checkpoint and the neck's in_channels).
#
# Recipe: the official one (LMMMEng/OverLoCK detection/configs/maskrcnn_overlock/mask_rcnn_overlock_t_in1k_fpn_1x_coco.py,
# mmdet 2.28.2; "we follow UniFormer's optimizer and lr schedule"), composed from mmdet 3.3's base configs:
# AdamW lr 2e-4, betas (0.9, 0.999), weight decay 0.05, no weight decay on parameters named *norm* (the official
# custom_keys; OverLoCK's LayerNorm2ds norm1/norm2 and the output norms; its BatchNorms, GRNs and the Base blocks'
# LayerNorm (official proj.0, here `ln`) are decayed, as officially), linear warm-up over 500 iterations from 0.001x,
# steps at epochs 8 and 11, 12 epochs, 16 images per iteration (8 GPUs x 2), no AMP.
# Backbone: the official detection backbone (in1k weights; extra_norm.{0-4} and h_proj: the Overview context added
# back to the stride-32 output, dense_context=True); outputs C1, C2, C3 + C4/4, C4 + C4/4.
# BatchNorm: officially converted to SyncBN and trained (no norm_eval); sync_bn='torch' does the same with mmengine's
# runner when launched distributed.
# Deviations: mmdet 3.3's Mask R-CNN / COCO pipeline defaults (the same model, 1333x800 resize and flip as mmdet 2).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)
sync_bn = 'torch'

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_overlock_t',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,
        drop_path_rate=0.2,
        out_norm=True,  # extra_norm.{0-3}: LayerNorm2d (eps 1e-6) per output
        dense_context=True,  # extra_norm.4 + h_proj: the context added back at stride 32 (official det backbone)
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/LMMMEng/OverLoCK/releases/download/v1/overlock_t_in1k_224.pth')),
    neck=dict(in_channels=[64, 128, 384, 640]))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0002, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    }))
auto_scale_lr = dict(enable=False, base_batch_size=16)
