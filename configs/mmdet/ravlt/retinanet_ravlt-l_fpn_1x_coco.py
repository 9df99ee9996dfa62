# RetinaNet 1x, COCO, vz_ravlt_l (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/retinanet_ravlt_fpn_1x_coco.py']
model = dict(
    backbone=dict(
        model_name='vz_ravlt_l',
        drop_path_rate=0.55,  # official retinanet_l_1x.py
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth')),
    neck=dict(in_channels=[192, 448, 640]))
