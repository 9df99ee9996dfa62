# UperNet 160k, ADE20K 512x512, vz_davit_base (in1k weights); the recipe is in the base config.
_base_ = ['./_base_/upernet_davit_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_davit_base',
        drop_path_rate=0.4,  # INFERRED: only DaViT-T configs were released; T's value + 0.1 for the wider, deeper model
        init_cfg=dict(checkpoint='https://huggingface.co/timm/davit_base.msft_in1k/resolve/main/model.safetensors')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
