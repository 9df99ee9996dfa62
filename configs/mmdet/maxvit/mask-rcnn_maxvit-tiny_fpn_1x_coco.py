# Mask R-CNN 1x, COCO, vz_maxvit_tiny (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/mask-rcnn_maxvit_fpn_1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_maxvit_tiny',
        drop_path_rate=0.2,  # MaxViT-tiny's ImageNet stochastic depth
        init_cfg=dict(checkpoint='https://huggingface.co/timm/maxvit_tiny_tf_224.in1k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[64, 128, 256, 512]))
