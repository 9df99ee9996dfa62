# RetinaNet 3x, COCO, vz_l2vit_base (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/retinanet_l2vit_fpn_ms-crop-3x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_l2vit_base',
        drop_path_rate=0.3,  # official retinanet_3x_l2vit_v0_base_coco.py
        init_cfg=dict(checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/L2ViT-Base-checkpoint-best-ema.pth')),
    neck=dict(in_channels=[256, 512, 1024]))
