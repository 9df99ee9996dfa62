# Cascade Mask R-CNN + FPN, 3x schedule (36 epochs), COCO, with a zoo RAVLT backbone (the family base).
#
# Recipe: the official qhfan/RALA detection/configs/RALA/casrcnn_{s,m,l}_3x.py (mmdet 2.11, model base
# RALA_cas_rcnn.py: Cascade Mask R-CNN with 4conv1fc SyncBN box heads and GIoU losses, the Swin/ConvNeXt cascade), composed
# from mmdet 3.3's ConvNeXt cascade config (convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x
# _coco.py: the same heads and DETR-style multi-scale + crop augmentation): AdamW lr 1e-4, betas (0.9, 0.999), weight
# decay 0.05, no weight decay on norm layers (official norm_decay_mult=0) and on *norm* parameters (custom_keys),
# linear warm-up over 500 iterations (ratio 0.001; ConvNeXt's base: 1000), steps at epochs 27 and 33, 16 images per
# iteration (8 GPUs x 2).
# Official mixed precision: fp16=dict() (dynamic loss scale): `python -m visionzoo.mm.run train CONFIG --amp`
# (the ConvNeXt base's AmpOptimWrapper and layer-wise lr decay are replaced by the official plain AdamW).
# Deviations: norm_eval honoured on the backbone's BatchNorms (see ./mask-rcnn_ravlt_fpn_1x_coco.py).
_base_ = ['mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py']
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)  # (the base imports mmpretrain)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_ravlt_s',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=True,
        drop_path_rate=0.15,  # official: S 0.15, B 0.4, L 0.55
        out_norm=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys={'norm': dict(decay_mult=0.)}))
auto_scale_lr = dict(enable=False, base_batch_size=16)
