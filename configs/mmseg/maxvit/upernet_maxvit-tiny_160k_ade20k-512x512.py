# UperNet 160k, ADE20K 512x512, vz_maxvit_tiny (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/upernet_maxvit_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_maxvit_tiny',
        drop_path_rate=0.2,  # MaxViT-tiny's ImageNet stochastic depth
        init_cfg=dict(checkpoint='https://huggingface.co/timm/maxvit_tiny_tf_224.in1k/resolve/main/model.safetensors')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
