# UperNet, 160k iterations ("2x"), ADE20K 512x512 crops, with a zoo RAVLT backbone (the family base; variants set
# model_name, drop_path_rate, the checkpoint and the heads' in_channels).
#
# Recipe: the official qhfan/RALA segmentation/configs/RALA/RALA_Uper_{s,b,l}_2x.py (mmseg 0.13, "strictly following
# UniFormer & CSWin"), composed from mmseg 1.2's UperNet (upernet_swin: the same UPerHead and FCN auxiliary head with
# SyncBN), ADE20K and 160k-schedule bases: AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01, no weight decay on
# *norm* parameters, linear warm-up over 1500 iterations (ratio 1e-6) then poly decay (power 1) to 0, 16 images per
# iteration (8 GPUs x 2).
# Official mixed precision: Fp16OptimizerHook(loss_scale=512.): `python -m visionzoo.mm.run train CONFIG --amp
# --cfg-options optim_wrapper.loss_scale=512`.
# Deviations: norm_eval honoured on the backbone's BatchNorms (official norm_eval=True was a no-op on its SyncBatchNorm).
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
        model_name='vz_ravlt_s',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=True,
        drop_path_rate=0.15,  # official: S 0.15, B 0.4, L 0.55
        out_norm=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth')),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=150),
    auxiliary_head=dict(in_channels=320, num_classes=150))  # in_index=2: the stride-16 stage

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
