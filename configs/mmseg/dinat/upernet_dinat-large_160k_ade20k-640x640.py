# UperNet 160k, ADE20K 640x640, vz_dinat_large; the recipe is in the base config.
_base_ = ['./_base_/upernet_dinat_160k_ade20k-640x640.py']
model = dict(
    backbone=dict(
        model_name='vz_dinat_large',
        # the official ADE20K dilations
        dilations=[[1, 20, 1], [1, 5, 1, 10], [1, 2, 1, 3, 1, 4, 1, 5, 1, 2, 1, 3, 1, 4, 1, 5, 1, 5], [1, 2, 1, 2, 1]],
        drop_path_rate=0.3,  # official
        # official: the ImageNet-22k weights dinat_large_in22k_224.pth (the model's .in22k tag); the
        # model's default weights (22k -> 1k fine-tuned) are named here, as every zoo config does
        init_cfg=dict(checkpoint='https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_large_in22k_in1k_224.pth')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))
