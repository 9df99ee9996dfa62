# RetinaNet + FPN, 1x schedule, COCO, with a zoo BiFormer backbone (the family base; variants set model_name,
# drop_path_rate, the checkpoint and the neck's in_channels).
#
# Recipe: the official one, rayleizhu/BiFormer @1697bbb object_detection/configs/coco/retinanet.1x.biformer_small.py
# (mmdet 2.25, following WaveViT), composed from mmdet 3.3's base configs:
# - backbone BiFormer_mm: n_win=16, auto_pad=True, norm_eval=True, LayerNorm2d output norms (``extra_norms.{i}``),
#   drop path 0.2 (S) / 0.3 (B);
# - FPN: the official neck takes all four levels with start_level=1 (level 0 unused: find_unused_parameters=True);
#   here the backbone returns levels 1-3 and FPN starts at 0: the same FPN (lateral convs, 'on_input' extra convs on
#   the last level), without the unused output norm (extra_norms.0 of an official checkpoint is left unused);
# - AdamW lr 1e-4, weight decay 1e-4, no gradient clipping; steps at epochs 8 and 11 after a linear warm-up of 500
#   iterations from 0.001 (mmdet's schedule_1x, as the official base); 16 images per iteration (8 GPUs x 2).
# Deviations:
# - weight decay: the official recipe decays every parameter; here parameters named *norm* are not decayed (the
#   family's one no-decay rule for its det/seg recipes, FAMILY.det_seg_no_decay; at weight decay 1e-4 for 12 epochs
#   this changes the norms' shrinkage by ~0.1%).
# - mixed precision: official ``fp16 = dict(loss_scale=512.)``; this config keeps OptimWrapper (AmpOptimWrapper needs
#   CUDA): ``python -m visionzoo.mm.run train CONFIG --amp --cfg-options optim_wrapper.loss_scale=512.``
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_biformer_small',
        out_indices=(1, 2, 3),  # strides 8, 16, 32: what FPN uses
        frozen_stages=-1,
        norm_eval=True,  # official BiFormer_mm(norm_eval=True)
        drop_path_rate=0.2,
        out_norm=True,
        with_cp=False,
        n_win=16,  # official det configs
        auto_pad=True,  # official det configs
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content')),
    neck=dict(in_channels=[128, 256, 512], start_level=0, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))  # see "Deviations"
auto_scale_lr = dict(enable=False, base_batch_size=16)
