# The cascade base with the official lr 5e-5 (DiNAT_s-L).
_base_ = ['./cascade-mask-rcnn_dinat_fpn_4conv1fc-giou_ms-crop-3x_coco.py']
optim_wrapper = dict(optimizer=dict(lr=0.00005))
