# Mask R-CNN 3x (multi-scale + crop), COCO, vz_nat_small; the recipe is in the base config.
_base_ = ['./_base_/mask-rcnn_dinat_fpn_ms-crop-3x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_nat_small',
        dilations=None,  # NAT: every dilation 1
        drop_path_rate=0.35,  # official
        init_cfg=dict(checkpoint='https://shi-labs.com/projects/nat/checkpoints/CLS/nat_small.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
