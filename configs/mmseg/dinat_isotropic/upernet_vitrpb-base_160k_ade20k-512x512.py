# UperNet 160k, ADE20K 512x512, vz_vitrpb_base (no official det/seg recipe: the base config is mmseg's plain-ViT UperNet).
_base_ = ['./_base_/upernet_dinat-isotropic_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_vitrpb_base',
        drop_path_rate=0.4,  # the model's ImageNet value (configs/imagenet/vz_vitrpb_base.yaml)
        init_cfg=dict(checkpoint='https://shi-labs.com/projects/dinat/checkpoints/isotropic/vitrpb_base_in1k_224.pth')),
    neck=dict(in_channels=[768, 768, 768, 768], out_channels=768),
    decode_head=dict(in_channels=[768, 768, 768, 768]),
    auxiliary_head=dict(in_channels=768))
