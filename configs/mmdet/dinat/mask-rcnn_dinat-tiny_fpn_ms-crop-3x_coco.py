# Mask R-CNN 3x (multi-scale + crop), COCO, vz_dinat_tiny; the recipe is in the base config.
_base_ = ['./_base_/mask-rcnn_dinat_fpn_ms-crop-3x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_dinat_tiny',
        # the official COCO dilations
        dilations=[[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7, 1, 3, 1, 5, 1, 7, 1, 3, 1, 5, 1, 7], [1, 3, 1, 3, 1]],
        drop_path_rate=0.2,  # official
        init_cfg=dict(checkpoint='https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_tiny_in1k_224.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
