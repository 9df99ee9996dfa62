# UperNet 160k, ADE20K 512x512, vz_nat_mini; the recipe is in the base config.
_base_ = ['./_base_/upernet_dinat_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_nat_mini',
        dilations=None,  # NAT: every dilation 1
        drop_path_rate=0.2,  # official
        init_cfg=dict(checkpoint='https://shi-labs.com/projects/nat/checkpoints/CLS/nat_mini.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
