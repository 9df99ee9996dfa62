"""BiFormer's ImageNet recipes (written by configs/imagenet/generate.py): the official DeiT-style training of
rayleizhu/BiFormer, each number with its source."""
from __future__ import annotations

from typing import Dict

import timm

TEMPLATE = """\
# {name} on ImageNet-1k: the official recipe
# Sources, rayleizhu/BiFormer @1697bbb: [main] main.py argument defaults (= configs/train_args.yaml),
#   [train.sh] scripts/train.sh, [engine] engine.py; [paper] arXiv:2303.08810 (drop path rates of T and B)
#   python train.py fit --config configs/imagenet/{name}.yaml --data.root /data/imagenet
# Global batch = data.batch_size x devices x num_nodes x accumulate_grad_batches; the lr scales linearly with it
# (lr_base at lr_base_size), as [main] does (lr * batch_size * world_size / 512).
# Eval transform: the model's pretrained_cfg (resize 256 -> center crop 224, bicubic, ImageNet mean/std; [main]).
# Not reproduced: [main] repeated augmentation (RASampler, 3 repeats per image per process; no such sampler here).
seed_everything: 0
trainer:
  accelerator: auto
  devices: auto
  num_nodes: 1
  strategy: auto              # several GPUs: ddp (or fsdp); nodes: num_nodes + torchrun / SLURM variables
  precision: 16-mixed         # [engine] torch.cuda.amp.autocast + NativeScaler (fp16 AMP)
  max_epochs: 300             # [main] epochs=300
  gradient_clip_val: null     # [main] clip_grad=None
  accumulate_grad_batches: 1
  log_every_n_steps: 50
  default_root_dir: runs/{name}
step_checkpoint:
  every_n_train_steps: 2000
model:
  model_name: {name}
  num_classes: 1000
  drop_path_rate: {drop_path:<11} # {drop_src}
  opt: adamw                  # [main] opt='adamw', opt_eps=1e-8, betas default (0.9, 0.999)
  lr_base: 5.0e-4             # [main] lr=5e-4 at batch 512 ([train.sh] batch_size=128 per GPU x {gpus} GPUs)
  lr_base_size: 512
  weight_decay: 0.05          # [main] weight_decay=0.05; biases and norms excluded (timm create_optimizer)
  sched: cosine               # [main] sched='cosine'
  warmup_epochs: 5            # [main] warmup_epochs=5
  warmup_lr: 1.0e-6           # [main] warmup_lr=1e-6
  min_lr: 1.0e-5              # [main] min_lr=1e-5
  smoothing: 0.1              # [main] smoothing=0.1 (in the mixup targets)
  mixup: 0.8                  # [main] mixup=0.8
  cutmix: 1.0                 # [main] cutmix=1.0
  mixup_prob: 1.0             # [main] mixup_prob=1.0
  mixup_switch_prob: 0.5      # [main] mixup_switch_prob=0.5
  mixup_mode: batch           # [main] mixup_mode='batch'
  model_ema: false            # [main] keeps ModelEma(0.99996) but evaluates and releases the raw model
                              # (evaluate(model), checkpoint['model']): validation here reports that model
data:
  root: null                  # --data.root <ImageNet folder: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG>
  batch_size: 128             # per device; [train.sh] batch_size=128
  num_workers: 10             # [main] num_workers=10
  input_size: 224             # [main] input_size=224
  auto_augment: rand-m9-mstd0.5-inc1  # [main] aa
  color_jitter: 0.4           # [main] color_jitter=0.4
  train_interpolation: bicubic  # [main] train_interpolation='bicubic'
  re_prob: 0.25               # [main] reprob=0.25
  re_mode: pixel              # [main] remode='pixel'
  re_count: 1                 # [main] recount=1
"""

# drop path rate and the GPUs of the official run per variant
_VARIANTS = dict(
    tiny=("0.1", "[paper] BiFormer-T (no official script; the anchors mark it unverified)", "8 (assumed)"),
    small=("0.15", "[train.sh] model='biformer_small' drop_path=0.15", "16"),
    base=("0.4", "[paper] BiFormer-B (no official script; the anchors mark it unverified)", "8 (assumed)"),
    stl=("0.1", "[train.sh] model='biformer_stl' drop_path=0.1", "8"),
)


def recipes() -> Dict[str, str]:
    """{recipe name: yaml text}: one recipe per registered BiFormer variant."""
    out = {}
    for name in timm.list_models("vz_biformer_*"):
        drop_path, drop_src, gpus = _VARIANTS[name.split("_")[2]]
        out[name] = TEMPLATE.format(name=name, drop_path=drop_path, drop_src=drop_src, gpus=gpus)
    return out
