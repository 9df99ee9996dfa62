"""``train.py``: LightningCLI over ClassificationModule and ImageDataModule.

``--config`` takes a file or the name of a shipped recipe (``vz_maxvit_tiny``, ``quickstart``: ``visionzoo.recipes``).

Adds two checkpoint callbacks to every run, configurable under ``checkpoint`` (best by val/top1, plus ``last.ckpt``
after every validation) and ``step_checkpoint`` (``last.ckpt`` again every N optimizer steps, so ``--ckpt_path last``
resumes from whichever is newer). Both write to ``<trainer.default_root_dir>/checkpoints`` unless a dirpath is given:
a fixed folder, so that a resumed run (which gets a new logger version) finds ``last.ckpt``. The logger defaults to
CSV files under ``<trainer.default_root_dir>/logs``.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from ..recipes import UnknownConfig, resolve_config_args
from .data import ImageDataModule
from .module import ClassificationModule

__all__ = ["VisionZooCLI", "StepCheckpoint", "main"]


class StepCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` optimizer steps (0: off), for resuming long epochs."""

    def __init__(self, every_n_train_steps: int = 1000, dirpath: Optional[str] = None):
        super().__init__(dirpath=dirpath, filename="step{step:07d}", every_n_train_steps=every_n_train_steps or None,
                         every_n_epochs=None if every_n_train_steps else 0, save_top_k=1 if every_n_train_steps else 0,
                         save_last=bool(every_n_train_steps))


class VisionZooCLI(LightningCLI):
    def parse_arguments(self, parser, args) -> None:
        """As Lightning's, except that ``--config`` also takes a shipped recipe's name (``vz_maxvit_tiny``,
        ``quickstart``; ``visionzoo.recipes``). An unknown name is a usage error naming the closest recipes."""
        if isinstance(args, (dict, Namespace)):
            return super().parse_arguments(parser, args)
        try:
            argv = resolve_config_args(sys.argv[1:] if args is None else args)
        except UnknownConfig as e:
            parser.error(str(e))
        self.config = parser.parse_args(argv)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/top1", "checkpoint.mode": "max", "checkpoint.save_top_k": 1,
                             "checkpoint.save_last": True, "checkpoint.filename": "best-{epoch:03d}",
                             "checkpoint.auto_insert_metric_name": False})
        parser.add_lightning_class_args(StepCheckpoint, "step_checkpoint")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        root = cfg.trainer.default_root_dir or "runs"
        cfg.trainer.default_root_dir = root
        for key in ("checkpoint", "step_checkpoint"):
            if cfg[key].dirpath is None:
                cfg[key].dirpath = os.path.join(root, "checkpoints")
        if cfg.trainer.logger in (None, True):
            cfg.trainer.logger = Namespace(class_path="lightning.pytorch.loggers.CSVLogger",
                                           init_args=Namespace(save_dir=root, name="logs"))


def main(args: Optional[List[str]] = None, run: bool = True, prog: Optional[str] = None) -> VisionZooCLI:
    """Lightning's CLI on ``args`` (default: the command line); ``prog`` names the command in its messages."""
    return VisionZooCLI(ClassificationModule, ImageDataModule, args=args, run=run,
                        parser_kwargs=dict(prog=prog) if prog else None,
                        save_config_kwargs=dict(overwrite=True), auto_configure_optimizers=False)
