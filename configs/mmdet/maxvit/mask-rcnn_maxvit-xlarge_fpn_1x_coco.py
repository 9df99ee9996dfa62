# Mask R-CNN 1x, COCO, vz_maxvit_xlarge (ImageNet-21k weights: xlarge has no in1k ones at 224); the recipe is in the base config.
_base_ = ['./_base_/mask-rcnn_maxvit_fpn_1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_maxvit_xlarge',
        drop_path_rate=0.6,  # as large (xlarge was pre-trained on ImageNet-21k only)
        init_cfg=dict(checkpoint='https://huggingface.co/timm/maxvit_xlarge_tf_224.in21k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[192, 384, 768, 1536]))
