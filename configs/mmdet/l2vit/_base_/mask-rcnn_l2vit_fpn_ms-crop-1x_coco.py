# Mask R-CNN + FPN, 1x schedule, COCO, with a zoo L2ViT backbone (the family base; variants set model_name,
# drop_path_rate, the checkpoint and the neck's in_channels).
#
# Recipe: the official ChuanyangZheng/L2ViT object_detection/configs/L2ViT/maskrcnn_1x_l2vit_v0_{tiny,small,base}_coco.py
# (mmdet 2.23), composed from mmdet 3.3's Swin-T config with the same DETR / Sparse R-CNN multi-scale + crop
# augmentation (swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py: train pipeline, Mask R-CNN R50-FPN heads, COCO
# instances): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05 on every parameter (the official config has no
# paramwise rule), no gradient clipping, linear warm-up over 500 iterations (ratio 0.001), steps at epochs 8 and 11,
# 16 images per iteration (8 GPUs x 2), the backbone's four outputs each with a LayerNorm (official norm0..3, eps 1e-5).
# Deviations: mmdet 3's RandomChoice / RandomChoiceResize stand for mmdet 2's AutoAugment / Resize(value) (same
# policies); the official run used no AMP ("do not use mmdet version fp16"): OptimWrapper, as here.
# window_size: the official mm backbone never passes its window_size on (always 7); this one builds what it is given.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_l2vit_tiny',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,  # the official backbone trains its BatchNorms (stem, LCMs)
        drop_path_rate=0.1,  # official 1x: T/S 0.1, B 0.2
        window_size=7,
        out_norm=True,  # official norm0..3: nn.LayerNorm(eps 1e-5) per output
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/'
                       'L2ViT-Tiny-checkpoint-best-ema.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))

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
