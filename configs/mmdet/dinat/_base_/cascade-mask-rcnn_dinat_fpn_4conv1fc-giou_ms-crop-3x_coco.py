# Cascade Mask R-CNN + FPN (4conv1fc GIoU box heads with SyncBN), 3x schedule with multi-scale + DETR-style crop
# training, COCO, with a zoo NAT / DiNAT / DiNAT_s backbone (the family base; variants set model_name, the det
# dilations, drop_path_rate, the checkpoint and the neck's in_channels).
#
# Recipe: the official one (detection/configs/dinat/cascade_mask_rcnn_dinat_*_3x_coco.py @d334f5b, mmdet 2.19),
# composed from mmdet 3.3's ConvNeXt-T cascade 3x config (the only cascade 3x config mmdet ships:
# configs/convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py), whose heads
# (three ConvFCBBoxHead, 4 convs + 1 fc, SyncBN, GIoU loss weight 10, reg_decoded_bbox), pipeline and 36-epoch
# schedule (steps 27, 33) are the official ones. Optimizer: the official AdamW lr 1e-4 (7.5e-5 and 5e-5 for the
# larger variants: see their bases), betas (0.9, 0.999), weight decay 0.05, no decay on 'rpb' and 'norm'; ConvNeXt's
# layer-decay constructor and AmpOptimWrapper are replaced.
# Deviations: the linear warm-up is the official 500 iterations (ConvNeXt's config has 1000); mixed precision: the
# official runs used Fp16OptimizerHook except DiNAT-L; AmpOptimWrapper needs CUDA, so this keeps OptimWrapper and the
# launcher's --amp switches it on. The heads' SyncBN is the official setting (single-process CPU runs need BN).
# Input size: see the Mask R-CNN base (the det dilations need the legacy padding below 784 px, reproduced here).
_base_ = ['mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py']
custom_imports = dict(_delete_=True, imports=['visionzoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_dinat_mini',
        dilations=[[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7], [1, 3, 1, 3, 1]],  # official COCO dilations
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        drop_path_rate=0.2,
        out_norm=True,  # the official norm{i}
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_mini_in1k_224.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),  # official warmup_iters=500
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'rpb': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    }))
auto_scale_lr = dict(enable=False, base_batch_size=16)
