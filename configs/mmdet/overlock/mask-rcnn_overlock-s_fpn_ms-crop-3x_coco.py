# Mask R-CNN ms-crop-3x, COCO, vz_overlock_s (in1k weights); the recipe is in the base config (official: mask_rcnn_overlock_s_in1k_fpn_3x_coco.py).
_base_ = ['./_base_/mask-rcnn_overlock_fpn_ms-crop-3x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_overlock_s',
        drop_path_rate=0.4,  # official
        init_cfg=dict(checkpoint='https://github.com/LMMMEng/OverLoCK/releases/download/v1/overlock_s_in1k_224.pth')),
    neck=dict(in_channels=[64, 128, 448, 640]))
