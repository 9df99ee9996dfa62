# Semantic FPN 80k, ADE20K 512x512, vz_ravlt_t (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/fpn_ravlt_80k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_ravlt_t',
        drop_path_rate=0.1,  # no official config for T (README: fpn_t_1x.pth); T's classification rate
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
