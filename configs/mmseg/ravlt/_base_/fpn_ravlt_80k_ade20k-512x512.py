# Semantic FPN, 80k iterations, ADE20K 512x512 crops, with a zoo RAVLT backbone (the family base; variants set
# model_name, drop_path_rate, the checkpoint and the neck's in_channels).
#
# Recipe: the official qhfan/RALA segmentation/configs/RALA/RALA_FPN_{s,b,l}_1x.py (mmseg 0.13; the README's T model has
# no config: its values are T's classification drop path and the same recipe), composed from mmseg 1.2's FPN
# (fpn_r50: FPN neck with 4 outputs, FPNHead, SyncBN), ADE20K and 80k-schedule bases: AdamW lr 1e-4, weight decay 1e-4,
# poly decay (power 0.9) to 1e-6 without warm-up (the official schedule_80k.py; mmseg 1.2's ends at 1e-4), 16 images
# per iteration (8 GPUs x 2), the backbone's four stages each with a LayerNorm2d (official extra_norms.{i}).
# No mixed precision in the official FPN configs.
# Deviations: the official config decays every parameter; the family's det/seg rule exempts *norm* parameters here too;
# norm_eval honoured on the backbone's BatchNorms (official norm_eval=True was a no-op on its SyncBatchNorm).
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_ravlt_t',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=True,
        drop_path_rate=0.1,  # official: T 0.1, S 0.15, B 0.4, L 0.55
        out_norm=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=80000, by_epoch=False)]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
