# RetinaNet 1x, COCO, vz_davit_small (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/retinanet_davit_fpn_ms-crop-1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_davit_small',
        drop_path_rate=0.2,  # INFERRED: only DaViT-T configs were released; T's value + 0.1 for the deeper model
        init_cfg=dict(checkpoint='https://huggingface.co/timm/davit_small.msft_in1k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[192, 384, 768]))
