# UperNet 160k, ADE20K 512x512, vz_dinat_mini; the recipe is in the base config.
_base_ = ['./_base_/upernet_dinat_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_dinat_mini',
        # the official ADE20K dilations
        dilations=[[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4], [1, 2, 1, 2, 1]],
        drop_path_rate=0.2,  # official
        init_cfg=dict(checkpoint='https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_mini_in1k_224.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
