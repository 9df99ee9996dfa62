# Cascade Mask R-CNN 3x (multi-scale + crop), COCO, vz_dinat_s_base; the recipe is in the base config (official lr 7.5e-5).
_base_ = ['./_base_/cascade-mask-rcnn_dinat_fpn_4conv1fc-giou_ms-crop-3x_coco_lr-7.5e-5.py']
model = dict(
    backbone=dict(
        model_name='vz_dinat_s_base',
        # the official COCO dilations
        dilations=[[1, 28], [1, 14], [1, 3, 1, 5, 1, 7, 1, 3, 1, 5, 1, 7, 1, 3, 1, 5, 1, 7], [1, 3]],
        drop_path_rate=0.6,  # official
        init_cfg=dict(checkpoint='https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_s_base_in1k_224.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
