# UperNet 160k, ADE20K 512x512, vz_sparsifiner_deit_small (DeiT-S backbone weights); the recipe is in the base config.
_base_ = ['./_base_/upernet_sparsifiner_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_sparsifiner_deit_small',
        drop_path_rate=0.1,  # mmseg's DeiT-S UperNet
        init_cfg=dict(
            checkpoint='https://huggingface.co/timm/deit_small_patch16_224.fb_in1k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[384, 384, 384, 384], out_channels=384),
    decode_head=dict(in_channels=[384, 384, 384, 384]),
    auxiliary_head=dict(in_channels=384))
