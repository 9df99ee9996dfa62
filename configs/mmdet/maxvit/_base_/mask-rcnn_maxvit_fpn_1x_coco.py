# Mask R-CNN + FPN, 1x schedule, COCO, with a zoo MaxViT backbone (the family base; variants set model_name,
# drop_path_rate, the checkpoint and the neck's in_channels).
#
# Recipe: the MaxViT authors published no detection recipe or code (google-research/maxvit issue #5:
# "no plans"), so this is mmdet's Swin-T Mask R-CNN 1x recipe (configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py):
# AdamW lr 1e-4, weight decay 0.05, no weight decay on norms and relative-position tables, linear warm-up over
# 1000 iterations, steps at epochs 8 and 11, 16 images per iteration (8 GPUs x 2).
# BatchNorm: MaxViT's MBConv blocks use BatchNorm; with 2 images per GPU batch statistics are noise, so
# norm_eval=True keeps the ImageNet statistics (as mmdet's ResNet recipes do). The LayerNorms train.
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
        model_name='vz_maxvit_tiny',
        out_indices=(0, 1, 2, 3),  # stages at strides 4, 8, 16, 32 (the stride-2 stem is not a stage)
        frozen_stages=-1,
        norm_eval=True,
        drop_path_rate=0.2,
        out_norm=True,  # a LayerNorm2d per output level, as mmdet's Swin and ConvNeXt backbones add
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/maxvit_tiny_tf_224.in1k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[64, 128, 256, 512]))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),  # BatchNorms, LayerNorms and the output norms (all named *norm*)
    }))
# Layer-wise lr decay instead (MaxViT has no published value; ConvNeXt's mmdet recipe uses 0.95):
# optim_wrapper = dict(constructor='VisionZooLayerDecayOptimizerConstructor',
#                      paramwise_cfg=dict(_delete_=True, decay_rate=0.95, decay_type='layer_wise'))
auto_scale_lr = dict(enable=False, base_batch_size=16)
