# UperNet 160k, ADE20K 512x512, vz_dinat_isotropic_small (no official det/seg recipe: the base config is mmseg's plain-ViT UperNet).
_base_ = ['./_base_/upernet_dinat-isotropic_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_dinat_isotropic_small',
        drop_path_rate=0.1,  # the model's ImageNet value (configs/imagenet/vz_dinat_isotropic_small.yaml)
        init_cfg=dict(checkpoint='https://shi-labs.com/projects/dinat/checkpoints/isotropic/dinat_isotropic_small_in1k_224.pth')),
    neck=dict(in_channels=[384, 384, 384, 384], out_channels=384),
    decode_head=dict(in_channels=[384, 384, 384, 384]),
    auxiliary_head=dict(in_channels=384))
