# Semantic FPN 80k, ADE20K 512x512, vz_ravlt_s (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/fpn_ravlt_80k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_ravlt_s',
        drop_path_rate=0.15,  # official RALA_FPN_s_1x.py
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
