# Mask R-CNN 1x, COCO, vz_overlock_b (in1k weights); the recipe is in the base config (official: mask_rcnn_overlock_b_in1k_fpn_1x_coco.py).
_base_ = ['./_base_/mask-rcnn_overlock_fpn_1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_overlock_b',
        drop_path_rate=0.6,  # official
        init_cfg=dict(checkpoint='https://github.com/LMMMEng/OverLoCK/releases/download/v1/overlock_b_in1k_224.pth')),
    neck=dict(in_channels=[80, 160, 528, 720]))
