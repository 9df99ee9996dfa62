# Mask R-CNN 3x, COCO, vz_ravlt_s (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/mask-rcnn_ravlt_fpn_ms-crop-3x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_ravlt_s',
        drop_path_rate=0.15,  # official maskrcnn_s_3x.py
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
