# UperNet 160k, ADE20K 512x512, vz_maxvit_base (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/upernet_maxvit_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_maxvit_base',
        drop_path_rate=0.4,  # MaxViT-base's ImageNet stochastic depth
        init_cfg=dict(checkpoint='https://huggingface.co/timm/maxvit_base_tf_224.in1k/resolve/main/model.safetensors')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
