# UperNet 160k, ADE20K 512x512, vz_overlock_t (in1k weights); the recipe is in the base config (official:
# upernet_overlock_tiny_ade20k_8xb2.py).
_base_ = ['./_base_/upernet_overlock_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_overlock_t',
        drop_path_rate=0.2,  # official
        init_cfg=dict(checkpoint='https://github.com/LMMMEng/OverLoCK/releases/download/v1/overlock_t_in1k_224.pth')),
    decode_head=dict(in_channels=[64, 128, 384, 640]),
    auxiliary_head=dict(in_channels=384))
