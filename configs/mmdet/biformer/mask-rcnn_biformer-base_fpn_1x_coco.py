# Mask R-CNN 1x, COCO, vz_biformer_base (in1k weights); the official recipe is in the base config.
_base_ = ['./_base_/mask-rcnn_biformer_fpn_1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_biformer_base',
        drop_path_rate=0.3,  # official maskrcnn.1x.biformer_base.py
        init_cfg=dict(checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHI_XPhoadjaNxtO/root/content')),
    neck=dict(in_channels=[96, 192, 384, 768]))
