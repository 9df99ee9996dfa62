# UperNet 160k, ADE20K 512x512, vz_ravlt_l (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/upernet_ravlt_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_ravlt_l',
        drop_path_rate=0.55,  # official RALA_Uper_l_2x.py
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth')),
    decode_head=dict(in_channels=[96, 192, 448, 640]),
    auxiliary_head=dict(in_channels=448))
