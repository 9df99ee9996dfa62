# UperNet 160k, ADE20K 512x512, vz_maxvit_xlarge (ImageNet-21k weights: xlarge has no in1k ones at 224); the recipe is in the base config.
_base_ = ['./_base_/upernet_maxvit_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_maxvit_xlarge',
        drop_path_rate=0.6,  # as large (xlarge was pre-trained on ImageNet-21k only)
        init_cfg=dict(checkpoint='https://huggingface.co/timm/maxvit_xlarge_tf_224.in21k/resolve/main/model.safetensors')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))
