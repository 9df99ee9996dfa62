# Mask R-CNN + FPN, 1x schedule, COCO, with a zoo RAVLT backbone (the family base; variants set model_name,
# drop_path_rate, the checkpoint and the neck's in_channels).
#
# Recipe: the official qhfan/RALA detection/configs/RALA/maskrcnn_{t,s,m,l}_1x.py (mmdet 2.11; "m" is RAVLT-B),
# composed from mmdet 3.3's Mask R-CNN R50-FPN, COCO instance (single-scale 1333x800 resize + flip, as the
# official coco_instance base), 1x schedule (linear warm-up over 500 iterations, ratio 0.001; steps at epochs 8 and
# 11) and runtime bases: AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, no weight decay on parameters named
# *norm* (official custom_keys 'norm'), 16 images per iteration (8 GPUs x 2), the backbone's four stages (before
# downsampling) each with a LayerNorm2d (official extra_norms.{i}, eps 1e-6).
# Official mixed precision: mmdet 2's fp16=dict() (dynamic loss scale); mmengine's AmpOptimWrapper refuses to build
# without CUDA, so this config keeps OptimWrapper: train with `python -m visionzoo.mm.run train CONFIG --amp`.
# Deviations: the official backbone builds SyncBatchNorm in its stem and downsamplers and norm_eval=True, which its
# train() applies to nn.BatchNorm2d only, so those norms silently trained on 2 images per GPU; here norm_eval is
# honoured (the intent); set norm_eval=False (with sync_bn='torch' for SyncBN) to train them as the official runs did.
# Weight decay: the official 'norm' key misses the stem's BatchNorms (named patch_embed.proj.{1,4,7,10}); here they
# are named *norm* and exempt too.
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
        model_name='vz_ravlt_t',
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=True,  # official norm_eval=True (a no-op there on SyncBatchNorm; honoured here)
        drop_path_rate=0.1,  # official: T 0.1, S 0.15, B 0.4, L 0.55 (the classification rates)
        out_norm=True,  # official extra_norms.{i}: LayerNorm2d (eps 1e-6)
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
auto_scale_lr = dict(enable=False, base_batch_size=16)
