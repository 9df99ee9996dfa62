# RetinaNet 1x, COCO, vz_l2vit_tiny (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/retinanet_l2vit_fpn_ms-crop-1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_l2vit_tiny',
        drop_path_rate=0.1,  # official retinanet_1x_l2vit_v0_tiny_coco.py
        init_cfg=dict(checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/L2ViT-Tiny-checkpoint-best-ema.pth')),
    neck=dict(in_channels=[192, 384, 768]))
