# UperNet, 160k iterations, ADE20K 512x512 crops, with a zoo BiFormer backbone (the family base; variants set
# model_name, drop_path_rate, the checkpoint and the heads' in_channels).
#
# Recipe: the official one, rayleizhu/BiFormer @1697bbb semantic_segmentation/configs/ade20k/upernet.biformer_small.py
# (mmseg 0.30, following UniFormer / CSWin), composed from mmseg 1.2's base configs (upernet_r50 heads, ade20k data,
# schedule_160k), as the official config composes mmseg 0.30's:
# - backbone BiFormer_mm: n_win=8 regions per side ("training resolution is 512"), auto_pad=True (the official zero
#   padding before qkv, so the whole-image test sizes run), LayerNorm2d output norms (``extra_norms.{i}``); the
#   segmentation BiFormer_mm converts its BatchNorms to SyncBatchNorm and trains them (no norm_eval):
#   norm_eval=False here and ``sync_bn = 'torch'`` (mmengine converts every BatchNorm when distributed);
#   drop path 0.3 (S) / 0.4 (B);
# - AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01, no weight decay on parameters named *norm*; linear warm-up
#   over 1500 iterations from 1e-6, then poly decay (power 1) to 0; 160k iterations of 16 images (8 GPUs x 2);
#   data: mmseg's ade20k base (random resize of 2048x512 by 0.5-2, crop 512 with cat_max_ratio 0.75, flip,
#   photometric distortion; test: resize to 2048x512 keeping the ratio, whole-image inference), as the official one.
# Deviations:
# - mixed precision: the official Fp16OptimizerHook (static loss scale 512); this config keeps OptimWrapper
#   (AmpOptimWrapper needs CUDA): ``python -m visionzoo.mm.run train CONFIG --amp --cfg-options
#   optim_wrapper.loss_scale=512.``
# - mmcv's poly schedule decays over all 160k iterations with the warm-up as a factor on top; mmengine's PolyLR here
#   starts after the warm-up (iterations 1500-160k), as mmseg 1.x's own conversions of such recipes do.
# - the stem / downsampling BatchNorms are named downsample_layers.* officially (so decayed there); here *norm*.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
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
        model_name='vz_biformer_small',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,  # official: SyncBatchNorm, trained
        drop_path_rate=0.3,
        out_norm=True,
        with_cp=False,
        n_win=8,  # official seg configs (visionzoo.models.biformer.n_win_for_size(512, 512))
        auto_pad=True,  # official seg configs
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content')),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))  # in_index=2: the stride-16 stage
sync_bn = 'torch'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))  # official custom_keys (the others match nothing)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)  # official data=dict(samples_per_gpu=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
