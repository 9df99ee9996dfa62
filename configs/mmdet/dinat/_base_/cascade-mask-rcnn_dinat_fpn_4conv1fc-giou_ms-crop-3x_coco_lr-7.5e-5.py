# The cascade base with the official lr 7.5e-5 (DiNAT-B, DiNAT-L, DiNAT_s-B).
_base_ = ['./cascade-mask-rcnn_dinat_fpn_4conv1fc-giou_ms-crop-3x_coco.py']
optim_wrapper = dict(optimizer=dict(lr=0.000075))
