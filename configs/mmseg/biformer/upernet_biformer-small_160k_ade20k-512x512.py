# UperNet 160k, ADE20K 512x512, vz_biformer_small (in1k weights); the official recipe is in the base config.
_base_ = ['./_base_/upernet_biformer_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_biformer_small',
        drop_path_rate=0.3,  # official upernet.biformer_small.py
        init_cfg=dict(checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
