# RetinaNet + FPN, 1x schedule, COCO, with a zoo MaxViT backbone (the family base; variants set model_name,
# drop_path_rate, the checkpoint and the neck's in_channels).
#
# Recipe: the MaxViT authors published no detection recipe (google-research/maxvit issue #5), so this follows
# mmdet's Swin-T configs: the backbone and neck wiring of configs/swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py
# (stages at strides 8, 16, 32, FPN start_level 0, 5 outputs) and the AdamW optimizer of the Swin-T Mask R-CNN
# 1x recipe (lr 1e-4, weight decay 0.05, no weight decay on norms and relative-position tables). mmdet's own
# Swin-T RetinaNet keeps ResNet's SGD (lr 0.01); AdamW is what transformer backbones are tuned with.
# BatchNorm: norm_eval=True keeps MaxViT's BatchNorm statistics frozen (2 images per GPU).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_maxvit_tiny',
        out_indices=(1, 2, 3),  # strides 8, 16, 32; only the levels FPN uses, so every parameter gets a gradient
        frozen_stages=-1,
        norm_eval=True,
        drop_path_rate=0.2,
        out_norm=True,
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/maxvit_tiny_tf_224.in1k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[128, 256, 512], start_level=0, num_outs=5))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    }))
auto_scale_lr = dict(enable=False, base_batch_size=16)
