"""MaxViT's ImageNet recipes (written by configs/imagenet/generate.py): the official google-research/maxvit
hyper-parameters, each with its source."""
from __future__ import annotations

from typing import Dict

import timm

COMMON_HEAD = """\
# {name} on ImageNet-1k: {title}
# Sources, google-research/maxvit @70a4707: [i1k] maxvit/models/hp/vision_i1k.py, [vision] maxvit/models/hp/vision.py
#   python train.py fit --config configs/imagenet/{name}.yaml --data.root /data/imagenet
# Global batch = data.batch_size x devices x num_nodes x accumulate_grad_batches; the lr scales linearly with it
# (lr_base at lr_base_size). Eval transform: the model's pretrained_cfg ({eval}).
seed_everything: 0
trainer:
  accelerator: auto
  devices: auto
  num_nodes: 1
  strategy: auto              # several GPUs: ddp (or fsdp); nodes: num_nodes + torchrun / SLURM variables
  precision: bf16-mixed       # [vision] tpu.use_bfloat16
  max_epochs: {epochs:<15} # [i1k] train.epochs={epochs}
  gradient_clip_val: 1.0      # [i1k] grad_clip=1.0
  accumulate_grad_batches: 1
  log_every_n_steps: 50
  default_root_dir: runs/{name}
step_checkpoint:
  every_n_train_steps: 2000
"""

DATA = """\
data:
  root: null                  # --data.root <ImageNet folder: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG>
  batch_size: {batch:<15} # per device; [i1k] global batch_size={global_batch}
  num_workers: 8
  input_size: {size:<15} # [i1k] image_size={size}
  auto_augment: rand-m15-n2-mmax15  # [i1k] randaug, ra_num_layers=2, ra_magnitude=15 (TF scale: mmax15)
  color_jitter: 0.0           # [i1k] RandAugment only
  re_prob: 0.0                # [i1k] no random erasing
"""

# official MaxViT i1k survival_prob per size -> drop_path_rate = 1 - survival_prob
_DROP_PATH = dict(tiny=("0.2", "[i1k] MaxViTTiny survival_prob=0.8"),
                  small=("0.3", "[i1k] MaxViTSmall survival_prob=0.7"),
                  base=("0.4", "[i1k] MaxViTBase survival_prob=0.6"),
                  large=("0.6", "[i1k] MaxViTLarge survival_prob=0.4"),
                  xlarge=("0.6", "MaxViT-L's (no official XL i1k recipe)"))


def recipe(name: str) -> str:
    parts = name.split("_")  # vz_maxvit_<size>[_<res>]
    size, res = parts[2], int(parts[3]) if len(parts) > 3 else 224
    drop_path, drop_src = _DROP_PATH[size]
    if res == 224:
        title = ("the official pre-training recipe" if size != "xlarge" else "MaxViT-L's pre-training recipe "
                 "(the official repo has no ImageNet-1k recipe for XL, only 21k weights)")
        text = COMMON_HEAD.format(name=name, title=title, epochs=300, eval="crop_pct 0.95, bicubic")
        text += f"""\
model:
  model_name: {name}
  num_classes: 1000
  drop_path_rate: {drop_path:<11} # {drop_src}
  opt: adamw                  # [i1k] optimizer='adamw'
  lr_base: 3.0e-3             # [i1k] lr_max=3e-3 at batch 4096
  lr_base_size: 4096
  weight_decay: 0.05          # [i1k] weight_decay=0.05; biases and norms excluded (weight_decay_exclude)
  sched: cosine               # [i1k] lr_schedule type='cosine'
  warmup_epochs: 32           # [i1k] warmup_steps=10000 at batch 4096 (313 steps per epoch)
  warmup_lr: 1.0e-6
  min_lr: 1.0e-5              # [i1k] lr_min=1e-5
  smoothing: 0.1              # [vision] loss label_smoothing=0.1
  mixup: 0.8                  # [i1k] mixup_alpha=0.8
  cutmix: 0.0                 # [i1k] cutmix_alpha=0.0
  model_ema: true
  model_ema_decay: 0.9999     # [i1k] ema_decay=0.9999
"""
        return text + DATA.format(batch=128, global_batch=4096, size=res)
    base = f"vz_maxvit_{size}"
    text = COMMON_HEAD.format(name=name, title=f"the official {res} fine-tuning recipe (from the 224 model)", epochs=30,
                              eval="crop_pct 1.0, squash, bicubic")
    text += f"""\
model:
  model_name: {name}
  num_classes: 1000
  pretrained_file: null       # the {base} checkpoint to fine-tune from ([i1k] init_finetune); tables are resized
  reset_classifier: true      # [i1k] "Do NOT reuse the classification head"
  drop_path_rate: {drop_path:<11} # {drop_src}{' (MaxViTTinyI1KFt keeps it)' if size == 'tiny' else ''}
  opt: adamw                  # [i1k] optimizer='adamw' (inherited)
  lr_base: 5.0e-5             # [i1k] i1k_ft lr_max=lr_min=5e-5 at batch 512
  lr_base_size: 512
  weight_decay: 1.0e-8        # [i1k] i1k_ft weight_decay=1e-8
  sched: constant             # [i1k] i1k_ft lr_schedule type=None, warmup_steps=0
  warmup_epochs: 0
  smoothing: 0.1              # [vision] loss label_smoothing=0.1
  mixup: 0.8                  # [i1k] i1k_ft mixup_alpha=0.8
  cutmix: 0.0                 # [i1k] i1k_ft cutmix_alpha=0.0
  model_ema: true
  model_ema_decay: 0.9999     # [i1k] ema_decay=0.9999 (inherited)
"""
    return text + DATA.format(batch=32, global_batch=512, size=res)



def recipes() -> Dict[str, str]:
    """{recipe name: yaml text}: one recipe per registered MaxViT variant."""
    return {name: recipe(name) for name in timm.list_models("vz_maxvit_*")}
