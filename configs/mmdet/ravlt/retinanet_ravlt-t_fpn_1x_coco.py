# RetinaNet 1x, COCO, vz_ravlt_t (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/retinanet_ravlt_fpn_1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_ravlt_t',
        drop_path_rate=0.1,  # official retinanet_t_1x.py
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth')),
    neck=dict(in_channels=[128, 256, 512]))
