# RetinaNet 1x, COCO, vz_biformer_small (in1k weights); the official recipe is in the base config.
_base_ = ['./_base_/retinanet_biformer_fpn_1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_biformer_small',
        drop_path_rate=0.2,  # official retinanet.1x.biformer_small.py
        init_cfg=dict(checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content')),
    neck=dict(in_channels=[128, 256, 512]))
