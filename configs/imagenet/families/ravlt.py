"""RAVLT's ImageNet recipes (written by configs/imagenet/generate.py): the official qhfan/RALA hyper-parameters
(DeiT's training code), each with its source."""
from __future__ import annotations

from typing import Dict

# the per-variant drop-path rates the released models were trained with: the factories fix them and ignore
# --drop-path ([rala] RAVLT_T/S/B/L drop_path_rate=...)
_DROP_PATH = dict(t=0.1, s=0.15, b=0.4, l=0.55)

TEMPLATE = """\
# {name} on ImageNet-1k: the official recipe, 300 epochs from scratch
# Sources, qhfan/RALA @a86314f: [run] classfication/run.sh, [main] classfication/main.py defaults,
#   [rala] classfication/RALA.py factories
#   python train.py fit --config configs/imagenet/{name}.yaml --data.root /data/imagenet
# Global batch = data.batch_size x devices x num_nodes x accumulate_grad_batches; the lr scales linearly with it
# (lr_base at lr_base_size, as [main] scales --lr by batch / 512). Eval transform: the model's pretrained_cfg
# (crop_pct 0.875, bicubic).
# Deviations: [main] samples with repeated augmentation (RASampler, 3 repeats) by default; here every image once
# per epoch. [main] scales the EMA decay with the batch (0.99996 ** (batch / 512)): at 8 x 128 that is 0.99992.
seed_everything: 0
trainer:
  accelerator: auto
  devices: auto
  num_nodes: 1
  strategy: auto              # several GPUs: ddp (or fsdp); nodes: num_nodes + torchrun / SLURM variables
  precision: 16-mixed         # [main] engine.py trains under torch.cuda.amp.autocast (fp16) with NativeScaler
  max_epochs: 300             # [main] --epochs 300
  accumulate_grad_batches: 1
  log_every_n_steps: 50
  default_root_dir: runs/{name}
step_checkpoint:
  every_n_train_steps: 2000
model:
  model_name: {name}
  num_classes: 1000
  drop_path_rate: {drop_path:<11} # [rala] {factory}(drop_path_rate={drop_path}) ([run]'s --drop-path is ignored)
  opt: adamw                  # [main] --opt adamw, eps 1e-8; 1-D parameters and biases without weight decay
  lr_base: 5.0e-4             # [main] --lr 5e-4 scaled by batch / 512
  lr_base_size: 512
  weight_decay: 0.05          # [main] --weight-decay 0.05
  sched: cosine               # [main] --sched cosine
  warmup_epochs: 5            # [run] --warmup-epochs 5
  warmup_lr: 1.0e-6           # [main] --warmup-lr 1e-6
  min_lr: 1.0e-5              # [main] --min-lr 1e-5
  cooldown_epochs: 0          # [main] --cooldown-epochs 10 is never reached: main.py stops after --epochs
  smoothing: 0.1              # [main] --smoothing 0.1
  mixup: 0.8                  # [main] --mixup 0.8
  cutmix: 1.0                 # [main] --cutmix 1.0
  model_ema: true             # [main] model_ema=True by default (the released files' `model` is what is evaluated)
  model_ema_decay: 0.99992    # [main] 0.99996 ** (1024 / 512)
data:
  root: null                  # --data.root <ImageNet folder: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG>
  batch_size: 128             # per device; [run] --batch-size 128 (x 8 GPUs: global 1024)
  num_workers: 16             # [run] --num_workers 16
  input_size: 224             # [main] --input-size 224
  auto_augment: rand-m9-mstd0.5-inc1  # [main] --aa rand-m9-mstd0.5-inc1
  color_jitter: 0.4           # [main] --color-jitter 0.4
  train_interpolation: bicubic  # [main] --train-interpolation bicubic
  re_prob: 0.25               # [main] --reprob 0.25 (pixel mode, 1 count)
"""


def recipes() -> Dict[str, str]:
    """{recipe name: yaml text}: one recipe per registered RAVLT variant."""
    out = {}
    for arch, drop_path in _DROP_PATH.items():
        name = f"vz_ravlt_{arch}"
        out[name] = TEMPLATE.format(name=name, drop_path=drop_path, factory=f"RAVLT_{arch.upper()}")
    return out
