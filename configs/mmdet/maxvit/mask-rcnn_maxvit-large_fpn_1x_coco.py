# Mask R-CNN 1x, COCO, vz_maxvit_large (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/mask-rcnn_maxvit_fpn_1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_maxvit_large',
        drop_path_rate=0.6,  # MaxViT-large's ImageNet stochastic depth
        init_cfg=dict(checkpoint='https://huggingface.co/timm/maxvit_large_tf_224.in1k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
