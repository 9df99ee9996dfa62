# Mask R-CNN 3x, COCO, vz_ravlt_l (in1k weights); the recipe is in the base config.
# The official L 3x run used 1 image per GPU (8 per iteration); this config keeps the family's 2.
_base_ = ['./_base_/mask-rcnn_ravlt_fpn_ms-crop-3x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_ravlt_l',
        drop_path_rate=0.55,  # official maskrcnn_l_3x.py
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth')),
    neck=dict(in_channels=[96, 192, 448, 640]))
