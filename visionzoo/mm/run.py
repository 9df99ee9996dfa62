"""Train or evaluate an mmdet / mmseg config (a small launcher; mmdet's and mmseg's own tools/train.py work too).

    python -m visionzoo.mm.run train configs/mmdet/maxvit/mask-rcnn_maxvit-tiny_fpn_1x_coco.py
    python -m visionzoo.mm.run train mask-rcnn_maxvit-tiny_fpn_1x_coco    # a shipped config by name, no checkout
    python -m visionzoo.mm.run train CONFIG --resume            # from the work dir's last checkpoint
    python -m visionzoo.mm.run test CONFIG work_dirs/.../epoch_12.pth
    torchrun --nproc-per-node 8 -m visionzoo.mm.run train CONFIG --launcher pytorch

mmengine writes its Runner checkpoints with pickled Python objects (message hub, numpy state) and reads them with
a plain ``torch.load``, which torch >= 2.6 restricts to tensors by default. Only when this launcher resumes or
evaluates such a checkpoint does it set ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (only trust your own checkpoints);
pretrained backbone weights always load with ``weights_only=True`` / safetensors, whatever the variable says.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import List, Optional


def allow_runner_checkpoints() -> None:
    """Let mmengine's ``torch.load`` read its own Runner checkpoints (pickled objects) on torch >= 2.6."""
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(prog="python -m visionzoo.mm.run", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "test"):
        p = sub.add_parser(name)
        p.add_argument("config", help="an mmdet or mmseg config file, or a shipped config's name "
                       "(mmdet/maxvit/mask-rcnn_maxvit-tiny_fpn_1x_coco.py or its file name; visionzoo config --list mm)")
        if name == "test":
            p.add_argument("checkpoint", help="a Runner checkpoint (work_dirs/.../epoch_12.pth)")
        else:
            p.add_argument("--resume", nargs="?", const="auto", default=None,
                           help="resume training: from the work dir's last checkpoint, or from the given file")
            p.add_argument("--amp", action="store_true", help="mixed precision (AmpOptimWrapper)")
        p.add_argument("--work-dir", help="where logs and checkpoints go (default: work_dirs/<config name>)")
        p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config entries: key=value")
        p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    args = parser.parse_args(argv)
    if not osp.exists(args.config):
        from visionzoo.recipes import UnknownConfig, mm_config_path
        try:
            args.config = str(mm_config_path(args.config))
        except UnknownConfig as e:
            parser.error(str(e))
    return args


def build_runner(args: argparse.Namespace):
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or osp.join(
        "work_dirs", osp.splitext(osp.basename(args.config))[0])
    if args.command == "train":
        if args.amp:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
        if args.resume:
            cfg.resume = True
            cfg.load_from = None if args.resume == "auto" else args.resume
            allow_runner_checkpoints()
    else:
        cfg.load_from = args.checkpoint
        allow_runner_checkpoints()
    if "runner_type" in cfg:
        from mmengine.registry import RUNNERS
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    runner = build_runner(args)
    if args.command == "train":
        runner.train()
    else:
        runner.test()


if __name__ == "__main__":
    main()
