# UperNet 160k, ADE20K 512x512, vz_davit_tiny (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/upernet_davit_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_davit_tiny',
        drop_path_rate=0.3,  # official upernet_davit_512x512_160k_ade20k.py
        init_cfg=dict(checkpoint='https://huggingface.co/timm/davit_tiny.msft_in1k/resolve/main/model.safetensors')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
