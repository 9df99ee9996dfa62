# UperNet 160k, ADE20K 512x512, vz_nat_base; the recipe is in the base config.
_base_ = ['./_base_/upernet_dinat_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_nat_base',
        dilations=None,  # NAT: every dilation 1
        drop_path_rate=0.5,  # official
        init_cfg=dict(checkpoint='https://shi-labs.com/projects/nat/checkpoints/CLS/nat_base.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
