"""Command line: ``visionzoo list | info | convert | bench | demo``.

Families and models are discovered through ``visionzoo.models.FAMILIES`` / ``family_of`` and timm's registry
(``timm.list_models("vz_*")``); nothing here names a family or an op.
"""
from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import sys
import time
from typing import Any, Dict, List, Optional

import timm
import torch

import visionzoo
from visionzoo.models import family_of


class CliError(Exception):
    """A user error: printed as one line, exit status 2, nothing written."""


def _check_model(name: str) -> str:
    names = timm.list_models("vz_*")
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `visionzoo list` shows them all"
        raise CliError(f"unknown model {name!r}{hint}")
    return name


def _model_kwargs(text: Optional[str]) -> Dict[str, Any]:
    if not text:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"--model-kwargs is not JSON: {e}") from None
    if not isinstance(kwargs, dict):
        raise CliError("--model-kwargs must be a JSON object, e.g. '{\"depths\": [1, 1, 1, 1]}'")
    return kwargs


def _meta_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, **kwargs).eval()


# ------------------------------------------------------------------------------------------------------ list

def model_summary(name: str, flops: bool = True, **kwargs) -> Dict[str, Any]:
    """One row of ``visionzoo list``: parameters (meta device), GFLOPs at the default input size (attention by each
    op's formula, ``visionzoo.flops``), pretrained tags, the minimum input size the family documents (absent when it
    declares none), and the kernels its family runs on."""
    from visionzoo.flops import count_flops

    model = _meta_model(name, **kwargs)
    cfg = timm.get_pretrained_cfg(name).to_dict()
    row: Dict[str, Any] = {
        "model": name,
        "family": family_of(name).name,
        "params": sum(p.numel() for p in model.parameters()),
        "input_size": list(cfg["input_size"]),
    }
    if flops:
        total, counts = count_flops(model, cfg["input_size"])
        row["gflops"] = round(total / 1e9, 3)
        row["attention_gflops"] = {op: round(f / 1e9, 3) for op, f in sorted(counts.formula.items())}
    row["pretrained_tags"] = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*")]
    if cfg.get("min_input_size"):
        row["min_input_size"] = list(cfg["min_input_size"])
    row["kernels"] = list(family_of(name).kernels)
    return row


def cmd_list(args: argparse.Namespace) -> int:
    pattern = args.filter if any(c in args.filter for c in "*?[") else f"*{args.filter}*"
    names = [n for n in timm.list_models("vz_*") if fnmatch.fnmatch(n, pattern)]
    if not names:
        close = difflib.get_close_matches(args.filter, timm.list_models("vz_*"), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CliError(f"no registered model matches {args.filter!r}{hint}")
    flops = not getattr(args, "no_flops", False)
    rows = []
    if not args.json:
        print(f"{'model':28s} {'params':>12s} {'GFLOPs':>8s}  {'input':>9s} {'min':>7s}  {'kernels':32s} pretrained")
    for name in names:
        row = model_summary(name, flops=flops)
        rows.append(row)
        if not args.json:
            size = "x".join(map(str, row["input_size"][1:]))
            min_size = "x".join(map(str, row["min_input_size"][1:])) if "min_input_size" in row else "-"
            gflops = f"{row['gflops']:8.2f}" if "gflops" in row else f"{'-':>8s}"
            print(f"{name:28s} {row['params']:12,d} {gflops}  {size:>9s} {min_size:>7s}  "
                  f"{','.join(row['kernels']):32s} {', '.join(row['pretrained_tags'])}", flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


# ------------------------------------------------------------------------------------------------------ demo

def _demo_image():
    """A real photo without shipping one: scikit-learn bundles two sample images."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("flower.jpg"))


def cmd_demo(args: argparse.Namespace) -> int:
    """Build every registered model, then classify a bundled photo with one of them."""
    started = time.perf_counter()
    print(f"visionzoo {visionzoo.__version__}, torch {torch.__version__}, timm {timm.__version__}")
    print(f"\n1. every registered model (timm.create_model on the meta device, {len(timm.list_models('vz_*'))} models)")
    cmd_list(argparse.Namespace(filter="vz_*", json=False, no_flops=True))

    print(f"\n2. classifying scikit-learn's sample photo 'flower.jpg' with {args.model}")
    overlay = dict(file=args.weights) if args.weights else None
    model = timm.create_model(args.model, pretrained=bool(args.weights), pretrained_cfg_overlay=overlay).eval()
    if not args.weights:
        print("   (random weights: no network here; pass --weights FILE with timm's converted checkpoint, e.g. "
              "model.safetensors of hf-hub timm/maxvit_tiny_tf_224.in1k, for real predictions)")
    config = timm.data.resolve_model_data_config(model)
    transform = timm.data.create_transform(**config)
    image = transform(_demo_image()).unsqueeze(0)
    with torch.no_grad():
        t0 = time.perf_counter()
        probs = model(image).softmax(dim=-1)[0]
        elapsed = time.perf_counter() - t0
    info = timm.data.ImageNetInfo()
    print(f"   eval transform: {config['input_size'][1]}x{config['input_size'][2]}, crop_pct {config['crop_pct']}, "
          f"{config['interpolation']}; forward {elapsed * 1000:.0f} ms on CPU")
    for p, i in zip(*probs.topk(5)):
        print(f"   {p.item():6.2%}  {info.index_to_description(i.item())}")
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0


# ------------------------------------------------------------------------------------------------------ main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visionzoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="registered models: params, GFLOPs, pretrained tags, minimum input, kernels")
    p.add_argument("filter", nargs="?", default="vz_*",
                   help="fnmatch pattern, or a substring of the name (default: vz_*)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (faster)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("demo", help="build every model, classify a sample photo")
    p.add_argument("--model", default="vz_maxvit_tiny")
    p.add_argument("--weights", default=None, help="a checkpoint file for --model (safetensors or .pth)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"visionzoo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
