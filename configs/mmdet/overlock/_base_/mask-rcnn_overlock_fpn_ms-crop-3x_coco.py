# Mask R-CNN + FPN, 3x schedule with multi-scale + crop augmentation, COCO, with a zoo OverLoCK backbone (the family
# base; variants set model_name, drop_path_rate, the checkpoint and the neck's in_channels).
#
# Recipe: the official one (LMMMEng/OverLoCK detection/configs/maskrcnn_overlock/mask_rcnn_overlock_t_in1k_fpn_3x_coco.py,
# mmdet 2.28.2): the 1x base with AdamW lr 1e-4 (weight decay 0.05, *norm* without decay), 36 epochs, steps at 27
# and 33, warm-up 500 iterations from 0.001x, and the DETR / Sparse R-CNN augmentation (flip; either a resize of
# the short side to 480-800 step 32, or a resize to 400/500/600, an absolute-range crop of 384-600 and the
# 480-800 resize), 16 images per iteration. The pipeline is written in mmdet 3.3's transforms (RandomChoice /
# RandomChoiceResize, as mmdet 3.3's swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py), the same augmentation.
_base_ = ['./mask-rcnn_overlock_fpn_1x_coco.py']

_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333), (640, 1333), (672, 1333), (704, 1333),
           (736, 1333), (768, 1333), (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', scales=_scales, keep_ratio=True)],
        [dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)], keep_ratio=True),
         dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
         dict(type='RandomChoiceResize', scales=_scales, keep_ratio=True)],
    ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=0.0001))
