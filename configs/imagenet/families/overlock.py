"""OverLoCK's ImageNet recipes (written by configs/imagenet/generate.py): the official LMMMEng/OverLoCK training
(scripts/train_*_model.sh on train.py, timm 0.6.12's training script with the auxiliary loss), each number with its
source. The re-parameterised ``*_reparam`` variants are deploy-only: no recipe (train the plain form, then
``model.reparam()``)."""
from __future__ import annotations

from typing import Dict

_DROP_PATH = dict(xt="0.1", t="0.15", s="0.4", b="0.5")  # [sh] --drop-path per variant

TEMPLATE = """\
# {name} on ImageNet-1k: the official recipe
# Sources, LMMMEng/OverLoCK @2c8ab3b: [sh] scripts/train_{v}_model.sh, [train] train.py (its argparse defaults)
#   python train.py fit --config configs/imagenet/{name}.yaml --data.root /data/imagenet
# Global batch = data.batch_size x devices x num_nodes x accumulate_grad_batches; the lr scales linearly with it
# (lr_base at lr_base_size, as [train] --auto-lr: lr = global batch / 1024 x 1e-3). Eval transform: the model's
# pretrained_cfg (crop_pct {crop}, bicubic).
# Deviations: [train] runs timm 0.6's 10 cooldown epochs at min_lr after the 300 (310 in all); here the cosine
# spans max_epochs=300. [sh] --native-amp is fp16 autocast; bf16-mixed here (the official README warns of NaN
# losses with fp16 AMP).
seed_everything: 0
trainer:
  accelerator: auto
  devices: auto
  num_nodes: 1
  strategy: auto              # several GPUs: ddp (or fsdp); nodes: num_nodes + torchrun / SLURM variables
  precision: bf16-mixed       # [sh] --native-amp (fp16 there)
  max_epochs: 300             # [sh] --epochs 300
  gradient_clip_val: 5.0      # [sh] --clip-grad 5 (norm, [train] --clip-mode default)
  accumulate_grad_batches: 1
  log_every_n_steps: 50
  default_root_dir: runs/{name}
step_checkpoint:
  every_n_train_steps: 2000
model:
  model_name: {name}
  num_classes: 1000
  drop_path_rate: {drop_path:<11} # [sh] --drop-path {drop_path}
  opt: adamw                  # [train] --opt adamw
  lr_base: 1.0e-3             # [sh] --lr 1e-3 --auto-lr: 1e-3 per 1024 images (2e-3 at the official 2048)
  lr_base_size: 1024
  weight_decay: 0.05          # [train] --weight-decay 0.05 (timm's factory: biases and 1-D norm parameters excluded)
  sched: cosine               # [train] --sched cosine
  warmup_epochs: 5            # [sh] --warmup-epochs 5
  warmup_lr: 1.0e-6           # [train] --warmup-lr 1e-6
  min_lr: 1.0e-5              # [train] --min-lr 1e-5
  smoothing: 0.1              # [train] --smoothing 0.1
  mixup: 0.8                  # [train] --mixup 0.8
  cutmix: 1.0                 # [train] --cutmix 1.0
  mixup_prob: 1.0             # [train] --mixup-prob 1.0
  mixup_switch_prob: 0.5      # [train] --mixup-switch-prob 0.5
  model_ema: true             # [sh] --model-ema
  model_ema_decay: 0.9999     # [sh] --model-ema-decay 0.9999
  aux_loss_weights:
    aux_logits: 0.4           # [train] --aux-loss-ratio 0.4: loss = loss(main) + 0.4 loss(aux) (the Overview head)
data:
  root: null                  # --data.root <ImageNet folder: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG>
  batch_size: 256             # per device; [sh] --batch-size 256 on 8 GPUs (global 2048)
  num_workers: 10             # [sh] --workers 10
  input_size: 224             # [train] 224
  auto_augment: rand-m9-mstd0.5-inc1  # [train] --aa rand-m9-mstd0.5-inc1
  color_jitter: 0.4           # [train] --color-jitter 0.4
  train_interpolation: random # [train] --train-interpolation random
  re_prob: 0.25               # [train] --reprob 0.25
  re_mode: pixel              # [train] --remode pixel
  re_count: 1                 # [train] --recount 1
"""

_CROP = dict(xt=0.925, t=0.95, s=0.95, b=0.975)


def recipes() -> Dict[str, str]:
    """{recipe name: yaml text}: one recipe per training-form OverLoCK variant."""
    return {f"vz_overlock_{v}": TEMPLATE.format(name=f"vz_overlock_{v}", v=v, crop=_CROP[v], drop_path=dp)
            for v, dp in _DROP_PATH.items()}
