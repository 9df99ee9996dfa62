# Cascade Mask R-CNN 3x (multi-scale + crop), COCO, vz_dinat_s_large; the recipe is in the base config (official lr 5e-5).
_base_ = ['./_base_/cascade-mask-rcnn_dinat_fpn_4conv1fc-giou_ms-crop-3x_coco_lr-5e-5.py']
model = dict(
    backbone=dict(
        model_name='vz_dinat_s_large',
        # the official COCO dilations
        dilations=[[1, 28], [1, 14], [1, 3, 1, 5, 1, 7, 1, 3, 1, 5, 1, 7, 1, 3, 1, 5, 1, 7], [1, 3]],
        drop_path_rate=0.6,  # official
        # official: the ImageNet-22k weights dinat_s_large_in22k_224.pth (the model's .in22k tag); the
        # model's default weights (22k -> 1k fine-tuned) are named here, as every zoo config does
        init_cfg=dict(checkpoint='https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_s_large_in1k_224.pth')),
    neck=dict(in_channels=[192, 384, 768, 1536]))
