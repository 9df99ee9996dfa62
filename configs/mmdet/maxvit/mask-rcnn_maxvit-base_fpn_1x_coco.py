# Mask R-CNN 1x, COCO, vz_maxvit_base (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/mask-rcnn_maxvit_fpn_1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_maxvit_base',
        drop_path_rate=0.4,  # MaxViT-base's ImageNet stochastic depth
        init_cfg=dict(checkpoint='https://huggingface.co/timm/maxvit_base_tf_224.in1k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[96, 192, 384, 768]))
