# Mask R-CNN + FPN, 1x schedule, COCO, with a zoo BiFormer backbone (the family base; variants set model_name,
# drop_path_rate, the checkpoint and the neck's in_channels).
#
# Recipe: the official one, rayleizhu/BiFormer @1697bbb object_detection/configs/coco/maskrcnn.1x.biformer_small.py
# (mmdet 2.25), composed from mmdet 3.3's base configs:
# - backbone BiFormer_mm: the four stage outputs, each through a LayerNorm2d (``extra_norms.{i}``; the zoo's det/seg
#   hook maps those keys), n_win=16 regions per side for ~800x1333 inputs, auto_pad=True (the official zero padding
#   before the qkv projection; the zoo default masks padded keys instead), BatchNorms in eval mode (norm_eval=True,
#   BiFormer_mm's default); drop path 0.2 (S) / 0.3 (B);
# - AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, no weight decay on parameters named *norm*; steps at epochs
#   8 and 11 after a linear warm-up of 500 iterations from 0.001 (mmdet's schedule_1x, as the official base);
#   16 images per iteration (8 GPUs x 2, the official slurm_train.sh and coco_instance base); data pipelines: mmdet's
#   coco_instance base (Resize 1333x800 keep ratio, flip 0.5, pad to 32), the same as the official mmdet 2 base.
# Deviations:
# - mixed precision: the official ``fp16 = dict()`` is mmcv's Fp16OptimizerHook (static loss scale 512). mmengine's
#   AmpOptimWrapper refuses to build without CUDA, so this config keeps OptimWrapper: train with
#   ``python -m visionzoo.mm.run train CONFIG --amp --cfg-options optim_wrapper.loss_scale=512.``
# - the stem / downsampling BatchNorms are named downsample_layers.{i}.{1,4} officially (so the 'norm' rule decays
#   their affine parameters there); here they are stem.norm* / downsample.norm and are not decayed.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_biformer_small',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=True,  # official BiFormer_mm(norm_eval=True)
        drop_path_rate=0.2,
        out_norm=True,  # official extra_norms: timm LayerNorm2d (eps 1e-6) per output
        with_cp=False,
        n_win=16,  # official det configs: 16 regions per side (visionzoo.models.biformer.n_win_for_size(800, 1333))
        auto_pad=True,  # official det configs: zero-pad x before qkv to whole regions
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content')),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))  # official custom_keys (the others match nothing)
auto_scale_lr = dict(enable=False, base_batch_size=16)
