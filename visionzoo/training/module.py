"""The LightningModule: a timm model trained the way timm's train.py trains it, under Lightning's Trainer.

Lightning restores the model, optimizer, lr scheduler and loop state from a checkpoint. What it does not keep is saved
here (``on_save_checkpoint``): the EMA weights (``state_dict_ema``, the key timm's loaders prefer) and the
python / numpy / torch RNG states (Mixup draws from numpy, RandAugment from python, drop_path and the sampler from torch).

Extension points for recipes that need more than a classifier's loss (each a documented init argument, set from the
recipe; none is specific to a family):

* named auxiliary outputs: a model with ``forward_train(x) -> {"logits": ..., name: ...}`` (e.g. an auxiliary
  classifier's ``"aux_logits"``); ``aux_loss_weights: {name: weight}`` adds ``weight * loss(output, targets)`` each.
* a teacher and distillation terms: ``teacher`` builds a frozen timm model; ``distill`` lists terms that compare a
  student output with a teacher output (logits, tokens, per-layer attention maps: tensors or lists of tensors).
* phase training: ``trainable`` (regexes) trains only the matching parameters; the rest is frozen and left out of
  the optimizer.
"""
from __future__ import annotations

import difflib
import importlib
import os
import random
import re
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import lightning as L
import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

__all__ = ["ClassificationModule", "DISTILL_LOSSES"]

Outputs = Union[torch.Tensor, List[torch.Tensor], Tuple[torch.Tensor, ...]]


def _kl(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Soft distillation (Hinton): KL(teacher || student) of the temperature-softened distributions over the last
    dimension, times tau^2, averaged over everything else."""
    s = F.log_softmax(student.float() / tau, dim=-1).flatten(0, -2)
    t = F.log_softmax(teacher.float() / tau, dim=-1).flatten(0, -2)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * tau * tau


def _hard_ce(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Hard distillation (DeiT): cross-entropy against the teacher's top class."""
    return F.cross_entropy(student.float(), teacher.argmax(dim=-1))


def _mse(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    return F.mse_loss(student.float(), teacher.float())


def _mse_sum(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Squared error summed over every element (per device batch), as recipes that use ``reduction='sum'`` do
    (e.g. Sparsifiner's attention reconstruction): the weight then depends on the per-device batch size."""
    return F.mse_loss(student.float(), teacher.float(), reduction="sum")


DISTILL_LOSSES: Dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "kl": _kl, "hard_ce": _hard_ce, "mse": _mse, "mse_sum": _mse_sum}
DISTILL_KEYS = {"output", "teacher_output", "loss", "weight", "tau"}
TEACHER_KEYS = {"model_name", "model_kwargs", "pretrained", "pretrained_file", "adapter"}


def _pairwise(fn, student: Outputs, teacher: Outputs, tau: float, name: str) -> torch.Tensor:
    """``fn`` on a pair of tensors, or averaged over two equally long lists (per-layer maps)."""
    if isinstance(student, torch.Tensor) and isinstance(teacher, torch.Tensor):
        return fn(student, teacher, tau)
    if isinstance(student, (list, tuple)) and isinstance(teacher, (list, tuple)) and len(student) == len(teacher) > 0:
        return torch.stack([fn(s, t, tau) for s, t in zip(student, teacher)]).mean()
    raise ValueError(f"distillation term {name!r}: student and teacher outputs must both be tensors or lists of the "
                     f"same length, got {type(student).__name__} and {type(teacher).__name__}")


def _import(path: str) -> Callable:
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"teacher.adapter {path!r} is not an importable callable (module.attribute): {e}") from None


def _rng_states() -> Dict[str, Any]:
    # plain Python values and tensors only, so that torch.load(weights_only=True) reads the checkpoint
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]
    states = dict(python=random.getstate(), numpy=numpy_state, torch=torch.get_rng_state())
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ClassificationModule(L.LightningModule):
    """Image classification with a timm model.

    Args:
        model_name: any timm model name (``vz_*`` for the zoo).
        num_classes: classifier size; must match the number of class folders of the data.
        pretrained: load the model's published weights (needs the HF hub, or ``pretrained_file``).
        pretrained_file: load weights from this file (safetensors / .pth / a Lightning checkpoint, whose EMA weights
            win) through the model's checkpoint filter; the file's classifier must have ``num_classes`` outputs
            unless ``reset_classifier``.
        reset_classifier: re-initialise the classifier after loading weights (fine-tuning with a new head).
        model_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``embed_dims``, ``depths``).
        drop_rate, drop_path_rate: classifier dropout and stochastic depth.
        bn_momentum: BatchNorm momentum override (PyTorch convention). MaxViT keeps TF's 0.99 (0.01 here), whose
            running statistics lag far behind in runs of a few hundred steps: short runs want ~0.1.
        channels_last: NHWC memory format for model and inputs.
        lr: absolute learning rate; None scales ``lr_base`` by the global batch: lr_base * batch / lr_base_size
            (``linear``) or lr_base * sqrt(batch / lr_base_size) (``sqrt``), as timm's train.py.
        opt, weight_decay, momentum, layer_decay, opt_kwargs: ``timm.optim.create_optimizer_v2`` (no weight decay
            on biases, norms and the model's ``no_weight_decay()``; layer decay from its ``group_matcher``).
        sched, warmup_epochs, warmup_lr, min_lr, cooldown_epochs: ``timm.scheduler.create_scheduler_v2``, stepped per
            optimizer update; its length is the Trainer's max_epochs. Warmup epochs may be fractional.
        smoothing: label smoothing (folded into the Mixup targets when Mixup/CutMix is on).
        mixup, cutmix, cutmix_minmax, mixup_prob, mixup_switch_prob, mixup_mode: ``timm.data.Mixup`` (off when
            mixup and cutmix are both 0); needs an even per-device batch.
        model_ema, model_ema_decay, model_ema_warmup: ``timm.utils.ModelEmaV3`` updated after every optimizer step;
            validation and test use the EMA weights when it is on.
        cls_loss_weight: weight of the classification loss on ``logits`` (0 for phases trained by other terms only).
        aux_loss_weights: ``{output name: weight}`` for the named outputs of ``model.forward_train(x)`` (which returns a
            dict with ``"logits"`` and those names); each adds ``weight * loss(output, targets)``, the same loss (and
            the same Mixup targets) as the logits.
        teacher: a frozen teacher for distillation: ``{model_name, model_kwargs, pretrained, pretrained_file,
            adapter}``. Its outputs are ``adapter(teacher, x)`` when ``adapter`` (``"module.function"``) is given,
            else ``teacher.forward_train(x)`` when it has one, else ``{"logits": teacher(x)}``. It sees the same
            (mixed) images as the student, runs in eval mode without gradients and is not saved in checkpoints.
        distill: distillation terms, each ``{output, teacher_output (default: output), loss: kl | hard_ce | mse |
            mse_sum, weight, tau (kl only, default 1)}``; outputs may be tensors or lists of tensors (averaged per
            element).
        trainable: regexes (``re.search`` on parameter names); when set, only matching parameters train (phase
            training, e.g. a predictor first), the others are frozen and not given to the optimizer.
    """

    def __init__(
            self,
            model_name: str = "vz_maxvit_tiny",
            num_classes: int = 1000,
            pretrained: bool = False,
            pretrained_file: Optional[str] = None,
            model_kwargs: Optional[Dict[str, Any]] = None,
            reset_classifier: bool = False,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            bn_momentum: Optional[float] = None,
            channels_last: bool = True,
            grad_checkpointing: bool = False,
            opt: str = "adamw",
            lr: Optional[float] = None,
            lr_base: float = 1e-3,
            lr_base_size: int = 256,
            lr_base_scale: str = "linear",
            weight_decay: float = 0.05,
            momentum: float = 0.9,
            layer_decay: Optional[float] = None,
            opt_kwargs: Optional[Dict[str, Any]] = None,
            sched: str = "cosine",
            warmup_epochs: float = 0.0,
            warmup_lr: float = 1e-6,
            min_lr: float = 1e-5,
            cooldown_epochs: int = 0,
            smoothing: float = 0.1,
            mixup: float = 0.0,
            cutmix: float = 0.0,
            cutmix_minmax: Optional[Tuple[float, float]] = None,
            mixup_prob: float = 1.0,
            mixup_switch_prob: float = 0.5,
            mixup_mode: str = "batch",
            model_ema: bool = False,
            model_ema_decay: float = 0.9998,
            model_ema_warmup: bool = False,
            cls_loss_weight: float = 1.0,
            aux_loss_weights: Optional[Dict[str, float]] = None,
            teacher: Optional[Dict[str, Any]] = None,
            distill: Optional[List[Dict[str, Any]]] = None,
            trainable: Optional[List[str]] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if not timm.is_model(model_name):
            close = difflib.get_close_matches(model_name, timm.list_models(), n=5)
            raise ValueError(f"model.model_name {model_name!r} is not a registered timm model"
                             + (f"; did you mean one of {close}?" if close else "")
                             + " (`visionzoo list` prints the zoo's models)")
        if lr_base_scale not in ("linear", "sqrt"):
            raise ValueError(f"model.lr_base_scale must be 'linear' or 'sqrt', got {lr_base_scale!r}")
        overlay = None
        if pretrained_file:
            # timm drops a file's classifier when num_classes differs from the pretrained_cfg's: declare the file's
            # classifier as ours, unless a new head is wanted anyway
            overlay = dict(file=pretrained_file) if reset_classifier else dict(file=pretrained_file,
                                                                               num_classes=num_classes)
        try:
            self.model = timm.create_model(
                model_name, pretrained=pretrained or bool(pretrained_file), pretrained_cfg_overlay=overlay,
                num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate, **(model_kwargs or {}))
        except RuntimeError as e:
            if not pretrained_file or "size mismatch" not in str(e):
                raise
            detail = " ".join(str(e).split())  # torch's message, on one line
            raise ValueError(f"{pretrained_file} does not fit model.num_classes={num_classes} ({detail}): set the "
                             f"file's number of classes, or model.reset_classifier: true for a new head") from e
        if reset_classifier:
            self.model.reset_classifier(num_classes)
        if bn_momentum is not None:
            for module in self.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.momentum = bn_momentum
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self._check_extensions(aux_loss_weights, teacher, distill)
        if trainable:
            self._freeze_all_but(trainable)
        # the teacher lives outside the module tree: not in state_dict (checkpoints), not a DDP parameter
        self.__dict__["teacher"] = self._build_teacher(teacher, num_classes) if teacher else None
        self.__dict__["teacher_adapter"] = _import(teacher["adapter"]) if teacher and teacher.get("adapter") else None

        self.mixup = None
        if mixup > 0 or cutmix > 0 or cutmix_minmax is not None:
            self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, cutmix_minmax=cutmix_minmax, prob=mixup_prob,
                               switch_prob=mixup_switch_prob, mode=mixup_mode, label_smoothing=smoothing,
                               num_classes=num_classes)
            self.train_loss = SoftTargetCrossEntropy()
        elif smoothing > 0:
            self.train_loss = LabelSmoothingCrossEntropy(smoothing)
        else:
            self.train_loss = torch.nn.CrossEntropyLoss()

        top_k = min(5, num_classes)
        self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.top5 = MulticlassAccuracy(num_classes, top_k=top_k, average="micro")
        self.images = SumMetric()  # evaluated images, summed over ranks
        self.val_loss = MeanMetric()
        self.train_bad_images = SumMetric()  # unreadable files skipped (data.bad_images: skip)
        self.eval_bad_images = SumMetric()
        # Outside the module tree (a plain attribute): not part of state_dict or the DDP parameters; saved in the
        # checkpoint as `state_dict_ema` by on_save_checkpoint
        self.__dict__["ema"] = None
        self._pending_rng: Optional[Dict[str, Any]] = None

    # --- extension points (auxiliary outputs, teacher, phase training) ---------------------------------------
    def _check_extensions(self, aux_loss_weights, teacher, distill) -> None:
        if (aux_loss_weights or distill) and not callable(getattr(self.model, "forward_train", None)) and any(
                name != "logits" for name in list(aux_loss_weights or {}) + [t.get("output") for t in distill or []]):
            raise ValueError(f"model.aux_loss_weights / model.distill name outputs besides 'logits', but "
                             f"{self.hparams.model_name} has no forward_train(x) returning named outputs")
        if distill and not teacher:
            raise ValueError("model.distill needs model.teacher (the model whose outputs the terms compare with)")
        if teacher:
            unknown = set(teacher) - TEACHER_KEYS
            if unknown or "model_name" not in teacher:
                raise ValueError(f"model.teacher takes {sorted(TEACHER_KEYS)} (model_name required), got {sorted(teacher)}")
        for term in distill or []:
            unknown = set(term) - DISTILL_KEYS
            if unknown or "output" not in term or term.get("loss") not in DISTILL_LOSSES:
                raise ValueError(f"model.distill terms take {sorted(DISTILL_KEYS)} with output set and loss one of "
                                 f"{sorted(DISTILL_LOSSES)}, got {term}")

    def _freeze_all_but(self, patterns: List[str]) -> None:
        names = [n for n, _ in self.model.named_parameters()]
        trained = {n for n in names if any(re.search(p, n) for p in patterns)}
        if not trained:
            raise ValueError(f"model.trainable {patterns} matches no parameter of {self.hparams.model_name} "
                             f"(names look like {names[:3]})")
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in trained)
        print(f"phase training: {len(trained)} of {len(names)} parameter tensors train ({patterns})")

    @staticmethod
    def _build_teacher(cfg: Dict[str, Any], num_classes: int) -> torch.nn.Module:
        overlay = dict(file=cfg["pretrained_file"], num_classes=num_classes) if cfg.get("pretrained_file") else None
        teacher = timm.create_model(cfg["model_name"], pretrained=bool(cfg.get("pretrained") or overlay),
                                    pretrained_cfg_overlay=overlay, num_classes=num_classes,
                                    **(cfg.get("model_kwargs") or {}))
        return teacher.eval().requires_grad_(False)

    def _student_outputs(self, x: torch.Tensor) -> Dict[str, Outputs]:
        forward_train = getattr(self.model, "forward_train", None)
        outputs = forward_train(x) if callable(forward_train) else {"logits": self.model(x)}
        if not isinstance(outputs, dict) or "logits" not in outputs:
            raise TypeError(f"{type(self.model).__name__}.forward_train must return a dict with 'logits', got "
                            f"{type(outputs).__name__}")
        return outputs

    @torch.no_grad()
    def _teacher_outputs(self, x: torch.Tensor) -> Dict[str, Outputs]:
        teacher = self.teacher
        if next(teacher.parameters()).device != self.device:
            teacher.to(self.device)
        teacher.eval()
        if self.teacher_adapter is not None:
            return self.teacher_adapter(teacher, x)
        forward_train = getattr(teacher, "forward_train", None)
        return forward_train(x) if callable(forward_train) else {"logits": teacher(x)}

    def _loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Every weighted term of the training loss, by name (``cls``, ``aux_<name>``, ``distill_<output>``)."""
        hp = self.hparams
        outputs = self._student_outputs(x)
        terms = {}
        if hp.cls_loss_weight:
            terms["cls"] = hp.cls_loss_weight * self.train_loss(outputs["logits"], y)
        for name, weight in (hp.aux_loss_weights or {}).items():
            if name not in outputs:
                raise KeyError(f"model.aux_loss_weights names {name!r}, but forward_train returned {sorted(outputs)}")
            terms[f"aux_{name}"] = weight * self.train_loss(outputs[name], y)
        if hp.distill:
            teacher_outputs = self._teacher_outputs(x)
            for term in hp.distill:
                student_key, teacher_key = term["output"], term.get("teacher_output", term["output"])
                missing = [k for k, have in ((student_key, outputs), (teacher_key, teacher_outputs)) if k not in have]
                if missing:
                    raise KeyError(f"distillation term {term}: outputs {missing} not produced (student: "
                                   f"{sorted(outputs)}, teacher: {sorted(teacher_outputs)})")
                value = _pairwise(DISTILL_LOSSES[term["loss"]], outputs[student_key], teacher_outputs[teacher_key],
                                  float(term.get("tau", 1.0)), student_key)
                terms[f"distill_{student_key}"] = float(term.get("weight", 1.0)) * value
        if not terms:
            raise ValueError("the training loss has no term: cls_loss_weight is 0 and no aux or distill terms are set")
        return terms

    # --- set-up and checks that need both model and data -------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        # an example batch of one: Lightning's model summary counts FLOPs (and shows in/out sizes) with it
        size = getattr(getattr(dm, "hparams", None), "input_size", None) or self.model.pretrained_cfg["input_size"][-1]
        self.example_input_array = torch.zeros(1, getattr(self.model, "in_chans", 3), size, size)
        n_data = getattr(dm, "num_classes", None)
        if n_data is not None and n_data != self.hparams.num_classes:
            raise ValueError(f"model.num_classes is {self.hparams.num_classes} but the data at {dm.root} has {n_data} "
                             f"class folders: set --model.num_classes {n_data}")
        batch_size = getattr(dm, "batch_size", 0)
        if stage == "fit" and self.mixup is not None and batch_size % 2:
            raise ValueError(f"Mixup/CutMix needs an even per-device batch, data.batch_size is {batch_size}: "
                             f"set it to {batch_size + 1} or {batch_size - 1}, or turn off model.mixup / model.cutmix")
        if self.hparams.model_ema and "FSDP" in type(self.trainer.strategy).__name__:
            raise ValueError("model.model_ema is not supported with FSDP (the EMA copy would not be sharded): "
                             "set --model.model_ema false, or use the ddp strategy")
        if self.hparams.model_ema and self.ema is None:  # a copy of the initial (or pretrained) weights
            self.__dict__["ema"] = ModelEmaV3(self.model, decay=self.hparams.model_ema_decay,
                                              use_warmup=self.hparams.model_ema_warmup)
            self.ema.requires_grad_(False)

    def _ema_model(self) -> Optional[torch.nn.Module]:
        if self.ema is None:
            return None
        first = next(self.ema.module.parameters())
        if first.device != self.device:
            self.ema.module.to(self.device)
        return self.ema.module

    # --- training --------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_start(self) -> None:
        if self._pending_rng is not None:  # here: after everything Lightning runs on restore (e.g. the sanity check)
            _set_rng_states(self._pending_rng)
            self._pending_rng = None
        self._ema_step = self.global_step

    def _inputs(self, batch) -> torch.Tensor:
        x = batch[0]
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = self._inputs(batch), batch[1]
        self.train_bad_images.update(batch[2].sum() if len(batch) > 2 else 0)  # CheckedImages' count
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        terms = self._loss_terms(x, y)
        loss = sum(terms.values())
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        if len(terms) > 1 or "cls" not in terms:
            self.log_dict({f"train/loss_{k}": v.detach() for k, v in terms.items()}, on_step=True, on_epoch=False,
                          batch_size=x.shape[0])
        lr = max(group["lr"] for group in self.trainer.optimizers[0].param_groups)  # unscaled by layer decay
        self.log("train/lr", lr, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None and self.global_step != self._ema_step:  # an optimizer step happened
            self._ema_model()
            self.ema.update(self.model, step=self.global_step)
            self._ema_step = self.global_step

    def on_train_epoch_end(self) -> None:
        self.log("train/bad_images", self.train_bad_images.compute())
        self.train_bad_images.reset()

    # --- evaluation --------------------------------------------------------------------------------------------
    def _eval_step(self, batch, prefix: str) -> None:
        x, y = self._inputs(batch), batch[1]
        self.eval_bad_images.update(batch[2].sum() if len(batch) > 2 else 0)
        model = self._ema_model() or self.model
        logits = model(x)
        self.val_loss.update(F.cross_entropy(logits, y), weight=x.shape[0])
        self.top1.update(logits, y)
        self.top5.update(logits, y)
        self.images.update(x.shape[0])

    def _eval_epoch_end(self, prefix: str) -> None:
        # torchmetrics' compute() aggregates over all ranks (DDP); top-1/top-5 in percent
        self.log(f"{prefix}/top1", self.top1.compute() * 100, prog_bar=True)
        self.log_dict({f"{prefix}/top5": self.top5.compute() * 100, f"{prefix}/loss": self.val_loss.compute(),
                       f"{prefix}/images": self.images.compute(),
                       f"{prefix}/bad_images": self.eval_bad_images.compute()})
        for metric in (self.top1, self.top5, self.val_loss, self.images, self.eval_bad_images):
            metric.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch, batch_idx: int) -> Dict[str, torch.Tensor]:
        model = self._ema_model() or self.model
        probs = model(self._inputs(batch)).softmax(dim=-1)
        top = probs.topk(min(5, probs.shape[-1]), dim=-1)
        return dict(indices=top.indices, probs=top.values, target=batch[1])

    # --- optimizer and schedule --------------------------------------------------------------------------------
    def global_batch_size(self) -> int:
        t = self.trainer
        return self.trainer.datamodule.batch_size * t.world_size * t.accumulate_grad_batches

    def learning_rate(self) -> float:
        hp = self.hparams
        if hp.lr is not None:
            return hp.lr
        ratio = self.global_batch_size() / hp.lr_base_size
        return hp.lr_base * (ratio if hp.lr_base_scale == "linear" else ratio ** 0.5)

    def configure_optimizers(self):
        hp = self.hparams
        lr = self.learning_rate()
        optimizer = create_optimizer_v2(self.model, opt=hp.opt, lr=lr, weight_decay=hp.weight_decay,
                                        momentum=hp.momentum, layer_decay=hp.layer_decay, **(hp.opt_kwargs or {}))
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 1:
            raise ValueError("the lr schedule needs trainer.max_epochs (>= 1)")
        updates_per_epoch = max(1, self.trainer.estimated_stepping_batches // epochs)
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=hp.sched, num_epochs=epochs, warmup_epochs=hp.warmup_epochs, warmup_lr=hp.warmup_lr,
            min_lr=hp.min_lr, cooldown_epochs=hp.cooldown_epochs, step_on_epochs=False,
            updates_per_epoch=updates_per_epoch)
        if self.global_rank == 0 and self.trainer.state.fn == "fit":
            print(f"lr {lr:.3g} (global batch {self.global_batch_size()}), {updates_per_epoch} updates per epoch, "
                  f"{hp.sched} schedule over {epochs} epochs, {hp.warmup_epochs} warmup")
        if scheduler is None:
            return optimizer
        return dict(optimizer=optimizer, lr_scheduler=dict(scheduler=scheduler, interval="step"))

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # timm schedulers are not torch LRSchedulers: step by the number of optimizer updates so far
        scheduler.step_update(num_updates=self.global_step)

    # --- checkpoint extras -------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        if self.ema is not None:
            checkpoint["state_dict_ema"] = {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}
        checkpoint["rng_states"] = _rng_states()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # called after setup(): the EMA copy exists when model_ema is on
        self._pending_rng = checkpoint.get("rng_states")  # applied in on_train_start
        if self.ema is not None:  # a checkpoint of a run without EMA: start the EMA from its weights
            ema = checkpoint.get("state_dict_ema") or {k[len("model."):]: v for k, v in checkpoint["state_dict"].items()
                                                       if k.startswith("model.")}
            self.ema.module.load_state_dict(ema)

    def on_fit_end(self) -> None:
        if self.global_rank != 0:
            return
        t = self.trainer
        ckpt = t.checkpoint_callback
        metrics = {k: float(v) for k, v in t.callback_metrics.items() if k.startswith("val/")}
        print("\nfinished:", ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items()) if "images" not in k))
        if ckpt is not None:
            print(f"checkpoints: {os.path.abspath(ckpt.dirpath)} (best: {os.path.basename(ckpt.best_model_path)}, "
                  f"last: {os.path.basename(ckpt.last_model_path)})")
        if t.logger is not None and t.logger.log_dir:
            print(f"logs: {os.path.abspath(t.logger.log_dir)}")
