"""DaViT's ImageNet recipes (written by configs/imagenet/generate.py).

No official ImageNet recipe was released (dingmyu/davit issue #2: the promised microsoft/DaViT repository never
appeared). What the repository does give: its training script, a copy of timm's ``train.py`` whose argument
defaults are the settings it runs with, and the README's training commands for DaViT-T (8 GPUs x 128 images,
``--lr 1e-3 --native-amp --clip-grad 1.0``; ``--lr 2e-3`` at twice the batch). Every value comes from one of those,
marked [train.py] or [README], or is marked INFERRED with its reasoning.
"""
from __future__ import annotations

from typing import Dict

import timm

HEAD = """\
# {name} on ImageNet-1k: {title}
# No official ImageNet recipe exists (dingmyu/davit issue #2). Sources, dingmyu/davit @fc79470:
#   [train.py] the repository's training script (timm's train.py): its argument defaults
#   [README]   the training command for DaViT-T: -b 128 on 8 GPUs, --lr 1e-3 --native-amp --clip-grad 1.0
#              (two nodes: --lr 2e-3, i.e. the lr scales linearly with the global batch)
#   INFERRED   not stated anywhere for this model: the reasoning follows each value
#   python train.py fit --config configs/imagenet/{name}.yaml --data.root /data/imagenet
# Global batch = data.batch_size x devices x num_nodes x accumulate_grad_batches; the lr scales linearly with it
# (lr_base at lr_base_size). Eval transform: the model's pretrained_cfg ({eval}).
seed_everything: 0
trainer:
  accelerator: auto
  devices: auto
  num_nodes: 1
  strategy: auto              # several GPUs: ddp (or fsdp); nodes: num_nodes + torchrun / SLURM variables
  precision: {precision:<16} # {precision_src}
  max_epochs: {epochs:<15} # {epochs_src}
  gradient_clip_val: 1.0      # [README] --clip-grad 1.0 (norm: [train.py] --clip-mode norm)
  accumulate_grad_batches: 1
  log_every_n_steps: 50
  default_root_dir: runs/{name}
step_checkpoint:
  every_n_train_steps: 2000
"""

# DaViT-T's stochastic depth: the README command does not set --drop-path, so [train.py]'s default 0.1 applies.
# The larger models have no command: INFERRED, the rates usually paired with these depths/widths.
_DROP_PATH = {
    "tiny": ("0.1", "[train.py] --drop-path 0.1 (the [README] command keeps the default)"),
    "small": ("0.2", "INFERRED: no command for DaViT-S; 0.2 for the deeper model (9 blocks in stage 3)"),
    "base": ("0.4", "INFERRED: no command for DaViT-B; 0.4 for the widest of T/S/B"),
    "large": ("0.5", "INFERRED: no DaViT-L recipe or weights were released"),
    "huge": ("0.5", "INFERRED: timm's definition, no recipe or weights"),
    "giant": ("0.5", "INFERRED: timm's definition, no recipe or weights"),
}

PRETRAIN = """\
model:
  model_name: {name}
  num_classes: 1000
  drop_path_rate: {drop_path:<11} # {drop_src}
  opt: adamw                  # [train.py] --opt adamw, --opt-eps 1e-8
  lr_base: 1.0e-3             # [README] --lr 1e-3 at 8 x 128 = 1024 images (2e-3 at 2048)
  lr_base_size: 1024
  weight_decay: 0.05          # [train.py] --weight-decay 0.05 (timm: no decay on biases and norms)
  sched: cosine               # [train.py] --sched cosine
  warmup_epochs: 5            # [train.py] --warmup-epochs 5
  warmup_lr: 1.0e-6           # [train.py] --warmup-lr 1e-6
  min_lr: 1.0e-5              # [train.py] --min-lr 1e-5
  cooldown_epochs: 0          # [train.py] --cooldown-epochs 10 adds 10 epochs at min_lr after the 300 (310 in all);
                              # here the cosine spans max_epochs, so those min_lr epochs are left out (deviation)
  smoothing: 0.1              # [train.py] --smoothing 0.1
  mixup: 0.8                  # [train.py] --mixup 0.8
  cutmix: 1.0                 # [train.py] --cutmix 1.0 (switch prob 0.5, mode batch)
  model_ema: false            # [train.py] --model-ema off, not set by the [README] command
data:
  root: null                  # --data.root <ImageNet folder: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG>
  batch_size: 128             # per device; [README] -b 128 on 8 GPUs: global batch 1024
  num_workers: 8
  input_size: {size:<15} # {size_src}
  auto_augment: rand-m9-mstd0.5-inc1  # [train.py] --aa rand-m9-mstd0.5-inc1
  color_jitter: 0.4           # [train.py] --color-jitter 0.4
  train_interpolation: bicubic  # [train.py] --train-interpolation bicubic
  re_prob: 0.25               # [train.py] --reprob 0.25, --remode pixel, --recount 1
  re_mode: pixel
"""

FINETUNE = """\
model:
  model_name: {name}
  num_classes: 1000
  pretrained: true            # the released Florence-2 tower ({hub}); a new 1000-class head
  drop_path_rate: 0.2         # INFERRED: a mid value for fine-tuning a 9-block stage-3 model
  opt: adamw                  # [train.py] --opt adamw
  lr_base: 5.0e-5             # INFERRED: a fine-tuning lr (1/20 of the from-scratch [README] 1e-3) at 1024 images
  lr_base_size: 1024
  layer_decay: 0.8            # INFERRED: keep the pre-trained early stages close to the released weights
  weight_decay: 0.05          # [train.py] --weight-decay 0.05
  sched: cosine               # [train.py] --sched cosine
  warmup_epochs: 2            # INFERRED: a short warm-up for the new head
  warmup_lr: 1.0e-6           # [train.py] --warmup-lr 1e-6
  min_lr: 1.0e-6              # INFERRED: below the fine-tuning lr
  smoothing: 0.1              # [train.py] --smoothing 0.1
  mixup: 0.8                  # [train.py] --mixup 0.8
  cutmix: 1.0                 # [train.py] --cutmix 1.0
  model_ema: false            # [train.py] --model-ema off
data:
  root: null                  # --data.root <ImageNet folder: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG>
  batch_size: 16              # INFERRED: per device at 768 px; the global batch sets the lr
  num_workers: 8
  input_size: 768             # the tower's Florence-2 resolution (its pretrained_cfg)
  auto_augment: rand-m9-mstd0.5-inc1  # [train.py] --aa rand-m9-mstd0.5-inc1
  color_jitter: 0.4           # [train.py] --color-jitter 0.4
  train_interpolation: bicubic  # [train.py] --train-interpolation bicubic
  re_prob: 0.25               # [train.py] --reprob 0.25
  re_mode: pixel
"""


def recipe(name: str) -> str:
    arch = name[len("vz_davit_"):]
    cfg = timm.get_pretrained_cfg(name)
    size = cfg.input_size[-1]
    precision = ("16-mixed", "[README] --native-amp (float16 autocast; bf16-mixed on hardware that has it)")
    eval_desc = f"crop_pct {cfg.crop_pct}, {cfg.interpolation}"
    if arch.endswith("_fl"):
        hub = cfg.hf_hub_id
        head = HEAD.format(name=name, title="fine-tuning the Florence-2 image tower (every value INFERRED: Florence-2 "
                           "published no classification recipe)", eval=eval_desc, precision=precision[0],
                           precision_src=precision[1], epochs=30,
                           epochs_src="INFERRED: a fine-tuning length")
        return head + FINETUNE.format(name=name, hub=hub)
    drop_path, drop_src = _DROP_PATH[arch]
    known = arch == "tiny"
    title = ("the repository's training settings (train.py defaults + the README command)" if known else
             "DaViT-T's settings ([train.py], [README]) with INFERRED model-specific values")
    size_src = ("[train.py] DaViT_224 (224 px)" if size == 224 else
                "INFERRED: DaViT-L is the official DaViT_large_window12_384 (window 12 at 384 px)")
    head = HEAD.format(name=name, title=title, eval=eval_desc, precision=precision[0], precision_src=precision[1],
                       epochs=300, epochs_src="[train.py] --epochs 300")
    return head + PRETRAIN.format(name=name, drop_path=drop_path, drop_src=drop_src, size=size, size_src=size_src)


def recipes() -> Dict[str, str]:
    """{recipe name: yaml text}: one recipe per registered DaViT variant."""
    return {name: recipe(name) for name in timm.list_models("vz_davit_*")}
