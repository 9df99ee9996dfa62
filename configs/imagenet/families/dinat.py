"""NAT / DiNAT / DiNAT_s ImageNet recipes (written by configs/imagenet/generate.py): the official
SHI-Labs/Neighborhood-Attention-Transformer ``classification/`` configs on top of its ``train.py`` defaults, each
number with its source. ``recipe_text`` is shared with the isotropic family's section (dinat_isotropic.py)."""
from __future__ import annotations

from typing import Dict, Optional

import timm

SOURCES = ("# Sources, SHI-Labs/Neighborhood-Attention-Transformer @d334f5b: [cfg] classification/configs/{cfg}.yml,\n"
           "#   [train] classification/train.py defaults, [model] the factory in classification/{factory}.py")

HEAD = """\
# {name} on ImageNet-1k: {title}
{sources}
#   python train.py fit --config configs/imagenet/{name}.yaml --data.root /data/imagenet
# Global batch = data.batch_size x devices x num_nodes x accumulate_grad_batches; the lr scales linearly with it
# (lr_base at lr_base_size). Eval transform: the model's pretrained_cfg ({eval}).
# INFERRED: the repository gives the per-GPU batch ({per_gpu}) and an unscaled lr, not the GPU count; 8 GPUs assumed
# (global batch {global_batch}), at which lr_base is the official lr.
# (*) The official models list rpb in ``no_weight_decay_keywords``; timm's create_optimizer_v2 reads ``no_weight_decay()``
# names, so whether the official runs (timm @9d6aad4) exempted rpb was not checked; these models exempt it.
seed_everything: 0
trainer:
  accelerator: auto
  devices: auto
  num_nodes: 1
  strategy: auto              # several GPUs: ddp (or fsdp); nodes: num_nodes + torchrun / SLURM variables
  precision: {precision:<16} # {precision_src}
  max_epochs: {epochs:<15} # {epochs_src}
  gradient_clip_val: 5.0      # [train] --clip-grad 5.0 (norm)
  accumulate_grad_batches: 1
  log_every_n_steps: 50
  default_root_dir: runs/{name}
step_checkpoint:
  every_n_train_steps: 2000
"""

DATA = """\
data:
  root: null                  # --data.root <ImageNet folder: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG>
  batch_size: {per_gpu:<15} # per device; [cfg] batch_size={per_gpu}
  num_workers: 8
  input_size: {size:<15} # [cfg] img_size={size} (224: train.py's default)
  auto_augment: rand-m9-mstd0.5-inc1  # [train] --aa
  color_jitter: 0.4           # [train] --color-jitter
  train_interpolation: random # [train] --train-interpolation
  re_prob: 0.25               # [train] --reprob
  re_mode: pixel              # [train] --remode
  re_count: 1                 # [train] --recount
"""


def recipe_text(name: str, cfg: str, factory: str, drop_path: float, drop_src: str, *, size: int = 224,
                finetune_from: Optional[str] = None, weight_decay: str = "0.05", warmup: int = 20,
                ema: bool = False, note: str = "") -> str:
    """One recipe: the 300-epoch pre-training (lr 1e-3, cosine) or a 30-epoch fine-tune (``finetune_from``)."""
    sources = SOURCES.format(cfg=cfg, factory=factory)
    eval_tf = "bicubic, crop_pct 0.875" if size == 224 else "bicubic, crop_pct 1.0"
    if finetune_from is None:
        title = "the official pre-training recipe" + note
        text = HEAD.format(name=name, title=title, sources=sources, eval=eval_tf, per_gpu=128, global_batch=1024,
                           precision="16-mixed", precision_src="[cfg] amp: True (torch.cuda.amp, float16)",
                           epochs=310, epochs_src="[cfg] epochs=300 + cooldown_epochs=10")
        text += f"""\
model:
  model_name: {name}
  num_classes: 1000
  drop_path_rate: {drop_path:<11} # {drop_src}
  opt: adamw                  # [train] --opt adamw (eps 1e-8, betas 0.9, 0.999)
  lr_base: 1.0e-3             # [cfg] lr=1e-3 (train.py does not scale it)
  lr_base_size: 1024
  weight_decay: {weight_decay:<13} # [cfg] weight_decay=5e-2; no decay: biases, norms, rpb (*)
  sched: cosine               # [cfg] sched=cosine, per step (sched_epochwise: False)
  warmup_epochs: {warmup:<12} # [cfg] warmup_epochs={warmup}
  warmup_lr: 1.0e-6           # [cfg] warmup_lr=1e-6
  min_lr: 5.0e-6              # [cfg] min_lr=5e-6
  cooldown_epochs: 10         # [cfg] cooldown_epochs=10; the official cosine spans 300 epochs then holds min_lr for
                              # 10, this module's cosine spans max_epochs (310): lr at epoch 300 is 7.6e-6, not 5e-6
  smoothing: 0.1              # [train] --smoothing
  mixup: 0.8                  # [train] --mixup
  cutmix: 1.0                 # [train] --cutmix
  mixup_prob: 1.0             # [train] --mixup-prob
  mixup_switch_prob: 0.5      # [train] --mixup-switch-prob
"""
        if ema:
            text += """\
  model_ema: true             # [cfg] model_ema: True
  model_ema_decay: 0.9998     # [train] --model-ema-decay
"""
        return text + DATA.format(per_gpu=128, size=size)
    title = f"the official ImageNet-22k -> 1k fine-tuning recipe at {size}" + note
    text = HEAD.format(name=name, title=title, sources=sources, eval=eval_tf, per_gpu=64, global_batch=512,
                       precision="32-true", precision_src="[cfg] amp: False", epochs=30, epochs_src="[cfg] epochs=30")
    text += f"""\
model:
  model_name: {name}
  num_classes: 1000
  pretrained_file: {finetune_from}
  reset_classifier: true      # the 21841-class head is replaced
  drop_path_rate: {drop_path:<11} # {drop_src}
  opt: adamw                  # [train] --opt adamw
  lr_base: 5.0e-5             # [cfg] lr=5e-5 (train.py does not scale it)
  lr_base_size: 512
  weight_decay: {weight_decay:<13} # [cfg] weight_decay={weight_decay}; no decay: biases, norms, rpb (*)
  sched: constant             # [cfg] sched=linear, which the official create_scheduler does not know: no scheduler,
                              # so a constant lr (warmup_epochs=0, cooldown_epochs=0)
  warmup_epochs: 0
  smoothing: 0.1              # [train] --smoothing
  mixup: 0.0                  # [cfg] mixup=0.0, mixup_prob=0.0
  cutmix: 0.0                 # [cfg] cutmix=0.0
"""
    return text + DATA.format(per_gpu=64, size=size)


_IN22K = "https://shi-labs.com/projects/dinat/checkpoints/imagenet22k"
# drop path per factory (classification/nat.py, dinat.py, dinats.py)
_DP = dict(mini=0.2, tiny=0.2, small=0.3, base=0.5, large=0.35)


def recipe(name: str) -> str:
    parts = name[len("vz_"):].split("_")
    if parts[0] == "nat":  # vz_nat_<size>
        size = parts[1]
        return recipe_text(name, f"nat_{size}", "nat", _DP[size], f"[model] nat_{size} drop_path_rate={_DP[size]}")
    if parts[1] == "s":  # vz_dinat_s_<size>[_384]
        size = parts[2]
        if size != "large":
            return recipe_text(name, f"dinat_s_{size}", "dinats", _DP[size],
                               f"[model] dinat_s_{size} drop_path_rate={_DP[size]}")
        res = 384 if name.endswith("_384") else 224
        note = "" if res == 384 else " (its config names model dinat_large, an official typo: dinat_s_large meant)"
        return recipe_text(name, "dinat_s_large" + ("_384" if res == 384 else ""), "dinats", 0.35,
                           "[model] dinat_s_large drop_path_rate=0.35", size=res, note=note,
                           finetune_from=f"{_IN22K}/dinat_s_large_in22k_224.pth",
                           weight_decay="1.0e-5" if res == 384 else "1.0e-4")
    size = parts[1]  # vz_dinat_<size>[_384][_11x11]
    if size != "large":
        return recipe_text(name, f"dinat_{size}", "dinat", _DP[size], f"[model] dinat_{size} drop_path_rate={_DP[size]}")
    res = 384 if "_384" in name else 224
    k11 = name.endswith("_11x11")
    source = f"{_IN22K}/dinat_large_in22k_224{'_11x11interp' if k11 else ''}.pth"
    if k11 and res == 224:
        note = (" (INFERRED: no official config; dinat_large.yml with 11x11 neighbourhoods, from the 7x7 ImageNet-22k "
                "weights with bicubic-interpolated tables; the official 11x11 model was only fine-tuned at 384)")
    elif k11:
        note = " (INFERRED: no config in the repository; dinat_large_384.yml, from the 11x11interp ImageNet-22k weights)"
    else:
        note = ""
    return recipe_text(name, "dinat_large" + ("_384" if res == 384 else ""), "dinat", 0.35,
                       "[model] dinat_large drop_path_rate=0.35", size=res, finetune_from=source, note=note,
                       weight_decay="1.0e-10" if res == 384 else "1.0e-4")


def recipes() -> Dict[str, str]:
    """{recipe name: yaml text}: one recipe per registered NAT / DiNAT / DiNAT_s variant."""
    return {name: recipe(name) for name in timm.list_models("vz_*", module="dinat")}
