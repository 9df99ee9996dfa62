# RetinaNet + FPN, 1x schedule, COCO, with a zoo L2ViT backbone (the family base; variants set model_name,
# drop_path_rate, the checkpoint and the neck's in_channels).
#
# Recipe: the official ChuanyangZheng/L2ViT object_detection/configs/L2ViT/retinanet_1x_l2vit_v0_*_coco.py
# (mmdet 2.23): RetinaNet R50-FPN heads, the FPN on the stride 8-32 outputs with 'on_input' extra convs (5 levels),
# the DETR / Sparse R-CNN multi-scale + crop augmentation, AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05 on
# every parameter, no gradient clipping, linear warm-up over 500 iterations, steps at epochs 8 and 11, 16 images per
# iteration (8 GPUs x 2), no AMP. Composed from mmdet 3.3's RetinaNet R50-FPN, COCO detection, 1x schedule and
# runtime bases; mmdet 3.3 has no RetinaNet config with this augmentation, so the pipeline below is written out
# (boxes only; the policies of mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py).
# Backbone outputs: the official config builds out_indices=(1, 2, 3) with norm1..3 and asks the user to delete the
# first-branch norm by hand; here only stages 1-3 are returned (out_indices) and their norms built.
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
        model_name='vz_l2vit_tiny',
        out_indices=(1, 2, 3),  # strides 8, 16, 32: the levels the official FPN uses
        frozen_stages=-1,
        norm_eval=False,
        drop_path_rate=0.1,  # official 1x: T/S 0.1, B 0.2
        window_size=7,  # passed on (the official mm backbone drops it)
        out_norm=True,  # official norm1..3
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/'
                       'L2ViT-Tiny-checkpoint-best-ema.pth')),
    neck=dict(in_channels=[192, 384, 768], start_level=0, add_extra_convs='on_input', num_outs=5))

_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333), (640, 1333), (672, 1333), (704, 1333),
           (736, 1333), (768, 1333), (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', scales=_scales, keep_ratio=True)],
        [dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)], keep_ratio=True),
         dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
         dict(type='RandomChoiceResize', scales=_scales, keep_ratio=True)],
    ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05))
auto_scale_lr = dict(enable=False, base_batch_size=16)
