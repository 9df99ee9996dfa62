# Mask R-CNN 3x, COCO, vz_davit_base (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/mask-rcnn_davit_fpn_ms-crop-3x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_davit_base',
        drop_path_rate=0.4,  # INFERRED: only DaViT-T configs were released; T's value + 0.2 for the wider, deeper model
        init_cfg=dict(checkpoint='https://huggingface.co/timm/davit_base.msft_in1k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
