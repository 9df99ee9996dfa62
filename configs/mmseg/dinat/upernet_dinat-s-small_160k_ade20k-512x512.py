# UperNet 160k, ADE20K 512x512, vz_dinat_s_small; the recipe is in the base config.
_base_ = ['./_base_/upernet_dinat_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_dinat_s_small',
        # the official ADE20K dilations
        dilations=[[1, 16], [1, 8], [1, 2, 1, 3, 1, 4, 1, 2, 1, 3, 1, 4, 1, 2, 1, 3, 1, 4], [1, 2]],
        drop_path_rate=0.3,  # official
        init_cfg=dict(checkpoint='https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_s_small_in1k_224.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
