# Mask R-CNN + FPN, 3x schedule with multi-scale + DETR-style crop training, COCO, with a zoo NAT / DiNAT / DiNAT_s
# backbone (the family base; variants set model_name, the det dilations, drop_path_rate, the checkpoint and the
# neck's in_channels).
#
# Recipe: the official one (SHI-Labs/Neighborhood-Attention-Transformer @d334f5b, detection/configs/dinat/
# mask_rcnn_dinat_*_3x_coco.py on mmdet 2.19), composed from mmdet 3.3's Swin-T Mask R-CNN 3x config
# (configs/swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py), which has the same pipeline (random flip; resize
# the short side to 480-800 step 32 at long side 1333, or resize to 400/500/600 + absolute-range crop 384x600 +
# resize), AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, 36 epochs with steps at 27 and 33, 16 images per
# iteration (8 GPUs x 2). Official no-decay keys: 'rpb' and 'norm' (the output norms norm{i} included).
# Deviations: mmdet 3's names for the same modules; the linear warm-up is the official 500 iterations (Swin's config
# has 1000); the official runs used mixed precision (Fp16OptimizerHook): mmengine's AmpOptimWrapper needs CUDA, so
# this keeps OptimWrapper and the launcher's --amp switches it on.
# Input size: the det dilations (stage 1: 28, so k * d = 196 tokens = 784 px) exceed the maps of most COCO images;
# the official models were trained with NATTEN 0.14, whose module zero-pads such maps to k * d, which these
# backbones reproduce (dilation_mode='pad', the default). NATTEN >= 0.15 refuses them (NAT issue #106).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionZooBackbone',
        model_name='vz_dinat_mini',
        dilations=[[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7], [1, 3, 1, 3, 1]],  # official COCO dilations
        out_indices=(0, 1, 2, 3),  # the pre-downsample output of each level, as the official backbone
        frozen_stages=-1,
        drop_path_rate=0.2,
        out_norm=True,  # the official norm{i}: nn.LayerNorm (eps 1e-5) per output (the model's det/seg hook)
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
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(_delete_=True, custom_keys={
        'rpb': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    }))
auto_scale_lr = dict(enable=False, base_batch_size=16)
