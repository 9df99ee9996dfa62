# Mask R-CNN 1x, COCO, vz_overlock_t (in1k weights); the recipe is in the base config (official: mask_rcnn_overlock_t_in1k_fpn_1x_coco.py).
_base_ = ['./_base_/mask-rcnn_overlock_fpn_1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_overlock_t',
        drop_path_rate=0.2,  # official
        init_cfg=dict(checkpoint='https://github.com/LMMMEng/OverLoCK/releases/download/v1/overlock_t_in1k_224.pth')),
    neck=dict(in_channels=[64, 128, 384, 640]))
