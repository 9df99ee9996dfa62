# RetinaNet + FPN, 1x schedule, COCO, with a zoo RAVLT backbone (the family base; variants set model_name,
# drop_path_rate, the checkpoint and the neck's in_channels).
#
# Recipe: the official qhfan/RALA detection/configs/RALA/retinanet_{t,s,m,l}_1x.py (mmdet 2.11), composed from mmdet
# 3.3's RetinaNet R50-FPN, COCO detection (1333x800 resize + flip), 1x schedule (500 warm-up iterations, steps at 8
# and 11) and runtime bases: AdamW lr 1e-4, weight decay 1e-4, 16 images per iteration (8 GPUs x 2), FPN on the
# stride 8-32 outputs with 'on_input' extra convs (5 levels).
# Backbone outputs: the official backbone returns all four stages and its FPN starts at level 1 (the stride-4 output
# and its norm are computed and unused: find_unused_parameters=True); here only stages 1-3 are returned
# (out_indices) and the FPN starts at 0: the same network without the unused output.
# Official mixed precision: fp16=dict(loss_scale=512.): `python -m visionzoo.mm.run train CONFIG --amp
# --cfg-options optim_wrapper.loss_scale=512`.
# Deviations: the official config decays every parameter (no paramwise rule); the family's det/seg rule exempts
# *norm* parameters here too (LayerNorm/BatchNorm scales at weight decay 1e-4: a negligible difference);
# norm_eval honoured on the backbone's BatchNorms (see ./mask-rcnn_ravlt_fpn_1x_coco.py).
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
        model_name='vz_ravlt_t',
        out_indices=(1, 2, 3),  # strides 8, 16, 32: the levels the official FPN uses
        frozen_stages=-1,
        norm_eval=True,
        drop_path_rate=0.1,  # official: T 0.1, S 0.15, B 0.4, L 0.55
        out_norm=True,  # official extra_norms.{1,2,3}
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth')),
    neck=dict(in_channels=[128, 256, 512], start_level=0, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
auto_scale_lr = dict(enable=False, base_batch_size=16)
