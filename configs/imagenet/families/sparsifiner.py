"""Sparsifiner's ImageNet recipes (written by configs/imagenet/generate.py): the official two-phase schedule of
lim142857/Sparsifiner, each number with its source.

Phase ``attn_recon`` (5 epochs) trains only the connectivity predictors, with dense attention, to reconstruct the
teacher's attention maps; phase ``cls_distill`` (45 epochs) trains the backbone only (the predictors frozen), with
the sparse attention, by classification + logit distillation + token distillation. The teacher is DeiT (the weights
the student starts from), whose attention maps ``visionzoo.models.sparsifiner.deit_teacher_outputs`` computes.
LV-ViT-S has no recipe: its official recipe needs token-labeling targets that cannot be produced here.
"""
from __future__ import annotations

from typing import Dict

HEAD = """\
# {name} on ImageNet-1k: {title}
# Sources, lim142857/Sparsifiner @9a11e26: [yaml] experiments-results-analysis/experiments/sparsifiner_default_config.yaml,
#   [main] src/main.py (argument defaults; phase switching, lines 700-770), [loss] src/losses.py (NewLoss)
#   python train.py fit --config configs/imagenet/{name}.yaml --data.root /data/imagenet{extra}
# The official learning rates are absolute (utils.cosine_scheduler, not scaled with the batch), at 168 images per
# process ([yaml] TRAIN.BATCH_SIZE; run_model.sh takes the GPU count as an argument). Eval transform: the model's
# pretrained_cfg (crop_pct 0.875, bicubic).{note}
seed_everything: 0
trainer:
  accelerator: auto
  devices: auto
  num_nodes: 1
  strategy: auto              # several GPUs: ddp (every parameter is in the graph: no find_unused_parameters)
  precision: bf16-mixed       # the official code trains in AMP (torch.cuda.amp)
  max_epochs: {epochs:<15} # [yaml] TRAIN_STRATEGY.INDICATOR {indicator}
  accumulate_grad_batches: 1  # [main] --update_freq 1
  log_every_n_steps: 50
  default_root_dir: runs/{name}
step_checkpoint:
  every_n_train_steps: 2000
"""

DATA = """\
data:
  root: null                  # --data.root <ImageNet folder: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG>
  batch_size: 168             # per device; [yaml] TRAIN.BATCH_SIZE 168 (per process)
  num_workers: 8
  input_size: 224             # [main] --input_size 224
  auto_augment: rand-m9-mstd0.5-inc1  # [main] --aa
  color_jitter: 0.4           # [main] --color_jitter
  re_prob: 0.25               # [main] --reprob
"""

COMMON = """\
  opt: adamw                  # [main] --opt adamw
  weight_decay: 0.05          # [yaml] OPTIM.WEIGHT_DECAY 0.05
  sched: cosine               # [main] utils.cosine_scheduler (per step)
  warmup_lr: 0.0              # cosine_scheduler's start_warmup_value 0
  smoothing: 0.1              # [main] --smoothing 0.1 (SoftTargetCrossEntropy under mixup)
  mixup: 0.8                  # [main] --mixup 0.8
  cutmix: 1.0                 # [main] --cutmix 1.0
  model_ema: true             # [main] --model_ema true
  model_ema_decay: 0.9999     # [main] --model_ema_decay
"""

_TEACHER = {"deit_small": "deit_small_patch16_224", "deit_base": "deit_base_patch16_224"}


def _teacher(arch: str) -> str:
    return (f"  teacher:                    # [main] the teacher is the DeiT the student starts from\n"
            f"    model_name: {_TEACHER[arch]}\n"
            f"    pretrained: true\n"
            f"    adapter: visionzoo.models.sparsifiner.deit_teacher_outputs  # logits, tokens, per-layer attention\n")


def attn_recon(arch: str) -> str:
    name = f"vz_sparsifiner_{arch}"
    note = "" if arch == "deit_small" else ("\n# DeiT-B has no official configuration: the DeiT-S recipe, teacher "
                                            "DeiT-B (by analogy).")
    text = HEAD.format(name=f"{name}.attn_recon", title="phase 1 of 2, attention reconstruction (predictors only)",
                       extra="", note=note, epochs=5, indicator="['attn_recon', 0, 0, 5]")
    text += f"""\
model:
  model_name: {name}
  num_classes: 1000
  pretrained: true            # the DeiT backbone ([main] loads deit_*_patch16_224 weights); predictors fresh
  model_kwargs:
    attn_recon: true          # [main] LOSS.USE_ATTN_RECON: dense attention in training, raw-basis approximation
  trainable: [mask_predictor] # [main] the mask-predictor optimizer (every other parameter requires_grad=False)
  lr: 3.0e-4                  # [yaml] ATTN_RECON.BASE_LR
  min_lr: 2.0e-4              # [yaml] ATTN_RECON.FINAL_LR
  warmup_epochs: 3            # [yaml] ATTN_RECON.WARMUP_EPOCHS
{COMMON}\
  cls_loss_weight: 0.0        # [main] CLS.WEIGHT = 0.0 in this phase ("DDP issue"; token distillation weight 0 too)
{_teacher(arch)}\
  distill:
    # [loss] MSE(reduction='sum') of each layer's approximate attention against the teacher's attention without
    # its cls row, averaged over layers, x [yaml] ATTN_RECON.WEIGHT 0.01 (the sum is per device batch of 168)
    - {{output: attn, loss: mse_sum, weight: 0.01}}
"""
    return text + DATA


def cls_distill(arch: str) -> str:
    name = f"vz_sparsifiner_{arch}"
    note = "" if arch == "deit_small" else ("\n# DeiT-B has no official configuration: the DeiT-S recipe, teacher "
                                            "DeiT-B (by analogy).")
    text = HEAD.format(name=f"{name}.cls_distill", title="phase 2 of 2, sparse attention with distillation "
                       "(backbone only)", extra=f" --model.pretrained_file runs/{name}.attn_recon/<checkpoint>.ckpt",
                       note=note, epochs=45, indicator="['cls_distill', 0, -5, 45]")
    text += f"""\
model:
  model_name: {name}
  num_classes: 1000
  pretrained_file: null       # the attn_recon phase's checkpoint (its EMA weights are preferred)
  trainable: ['^(?!.*mask_predictor)']  # [main] the backbone optimizer (mask_predictor requires_grad=False)
  lr: 8.0e-5                  # [yaml] CLS_DISTILL.BASE_LR
  min_lr: 2.0e-6              # [yaml] CLS_DISTILL.FINAL_LR
  warmup_epochs: 3            # [yaml] CLS_DISTILL.WARMUP_EPOCHS
{COMMON}\
  cls_loss_weight: 1.0        # [yaml] LOSS.CLS.WEIGHT
{_teacher(arch)}\
  distill:
    - {{output: logits, loss: kl, weight: 0.5, tau: 1.0}}  # [loss] KL(log_softmax, log_target, batchmean), CLS_DISTILL 0.5
    - {{output: tokens, loss: mse, weight: 0.5}}           # [loss] MSE of the final-norm patch tokens, TOKEN_DISTILL 0.5
"""
    return text + DATA


def recipes() -> Dict[str, str]:
    """{recipe name: yaml text}: the two phases of each DeiT Sparsifiner (LV-ViT-S is inference-only here)."""
    out = {}
    for arch in ("deit_small", "deit_base"):
        out[f"vz_sparsifiner_{arch}.attn_recon"] = attn_recon(arch)
        out[f"vz_sparsifiner_{arch}.cls_distill"] = cls_distill(arch)
    return out
