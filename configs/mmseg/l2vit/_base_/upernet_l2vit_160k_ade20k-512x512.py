# UperNet, 160k iterations, ADE20K 512x512 crops, with a zoo L2ViT backbone (the family base; variants set
# model_name, drop_path_rate, the checkpoint and the heads' in_channels).
#
# Recipe: the official ChuanyangZheng/L2ViT semantic_segmentation/configs/novel/upernet_l2vit_*_512x512_160k_ade20k.py
# (mmseg 0.26; its base file is named upernet_l2lvit.py while the configs ask for upernet_l2vit.py, a repository
# typo), composed from mmseg 1.2's UperNet (upernet_swin: the same UPerHead and FCN auxiliary head), ADE20K and
# 160k-schedule bases: AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01 on every parameter (the official no-decay
# rule for norms is commented out), linear warm-up over 1500 iterations (ratio 1e-6) then poly decay (power 1) to 0,
# 16 images per iteration (8 GPUs x 2), backbone drop path 0.3 (T, S and B), a LayerNorm on each backbone output
# (official norm0..3). No AMP in the official run.
# Heads: the official base config uses plain BN (type='BN', with a "SyncBN" comment); mmseg's SyncBN is kept
# here (8-GPU runs normalise over 16 images instead of 2; single-process runs fall back to BN).
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_l2vit_tiny',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,
        drop_path_rate=0.3,  # official: 0.3
        window_size=7,  # passed on (the official mm backbone drops it)
        out_norm=True,
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/'
                       'L2ViT-Tiny-checkpoint-best-ema.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))  # in_index=2: the stride-16 stage

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
