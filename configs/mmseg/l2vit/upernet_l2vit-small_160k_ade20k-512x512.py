# UperNet 160k, ADE20K 512x512, vz_l2vit_small (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/upernet_l2vit_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_l2vit_small',
        drop_path_rate=0.3,  # official upernet_l2vit_small_512x512_160k_ade20k.py
        init_cfg=dict(checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/L2ViT-Small-checkpoint-best-ema.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
