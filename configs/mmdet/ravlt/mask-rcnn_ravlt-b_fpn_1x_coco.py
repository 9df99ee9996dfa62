# Mask R-CNN 1x, COCO, vz_ravlt_b (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/mask-rcnn_ravlt_fpn_1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_ravlt_b',
        drop_path_rate=0.4,  # official maskrcnn_m_1x.py
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth')),
    neck=dict(in_channels=[96, 192, 384, 512]))
