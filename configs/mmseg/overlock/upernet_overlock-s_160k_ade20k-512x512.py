# UperNet 160k, ADE20K 512x512, vz_overlock_s (in1k weights); the recipe is in the base config (official:
# upernet_overlock_small_ade20k_8xb2.py).
_base_ = ['./_base_/upernet_overlock_160k_ade20k-512x512.py']
model = dict(
    backbone=dict(
        model_name='vz_overlock_s',
        drop_path_rate=0.3,  # official
        init_cfg=dict(checkpoint='https://github.com/LMMMEng/OverLoCK/releases/download/v1/overlock_s_in1k_224.pth')),
    decode_head=dict(in_channels=[64, 128, 448, 640]),
    auxiliary_head=dict(in_channels=448))
