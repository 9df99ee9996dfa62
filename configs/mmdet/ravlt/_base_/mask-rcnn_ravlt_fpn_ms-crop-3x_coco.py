# Mask R-CNN + FPN, 3x schedule (36 epochs), COCO, with a zoo RAVLT backbone (the family base).
#
# Recipe: the official qhfan/RALA detection/configs/RALA/maskrcnn_{s,m,l}_3x.py (mmdet 2.11), composed from mmdet 3.3's
# Swin-T config with the same DETR / Sparse R-CNN multi-scale + crop augmentation
# (swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py: train pipeline, Mask R-CNN R50-FPN heads, COCO instances):
# AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, no weight decay on *norm* parameters, linear warm-up over 500
# iterations (ratio 0.001), steps at epochs 27 and 33, 16 images per iteration (8 GPUs x 2; the official L config:
# 8 x 1).
# Official mixed precision: fp16=dict() (dynamic loss scale): `python -m visionzoo.mm.run train CONFIG --amp`.
# Deviations: mmdet 3's RandomChoice / RandomChoiceResize for mmdet 2's AutoAugment / Resize(value) (same policies);
# norm_eval honoured on the backbone's BatchNorms (see ./mask-rcnn_ravlt_fpn_1x_coco.py).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']
custom_imports = dict(imports=['visionzoo.mm'], allow_failed_imports=False)

model = dict(
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
    neck=dict(in_channels=[64, 128, 320, 512]))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
auto_scale_lr = dict(enable=False, base_batch_size=16)
