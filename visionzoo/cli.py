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
    """``name`` (optionally with a pretrained tag, ``vz_x.tag``) if it is registered, else a CliError suggesting the
    closest registered names."""
    names = timm.list_models("vz_*")
    base, _, tag = name.partition(".")
    if base in names and tag and name not in timm.list_pretrained(f"{base}.*"):
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{base}.*")]
        raise CliError(f"{base} has no pretrained tag {tag!r} (tags: {', '.join(tags) or 'none'})")
    if base not in names:
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


_BUILD_KEYS = ("feature_cfg", "pretrained_filter_fn", "pretrained_cfg_overlay", "pretrained_cfg", "pretrained_strict",
               "features_only", "out_indices", "feature_cls")


def model_args(name: str, **kwargs) -> Dict[str, Any]:
    """The constructor arguments that ``timm.create_model(name, **kwargs)`` hands to the model class: the
    architecture as the family's registration function sets it (widths, depths, heads, windows ...). Read by
    watching timm's ``build_model_with_cfg`` while the model is built on the meta device."""
    import timm.models as tm

    seen: Dict[str, Any] = {}
    original = tm.build_model_with_cfg

    def watching(model_cls, variant, pretrained, **build_kwargs):
        seen.update({k: v for k, v in build_kwargs.items() if k not in _BUILD_KEYS})
        return original(model_cls, variant, pretrained, **build_kwargs)

    tm.build_model_with_cfg = watching
    try:
        _meta_model(name, **kwargs)
    finally:
        tm.build_model_with_cfg = original
    return seen


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


# ------------------------------------------------------------------------------------------------------ info

def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def model_info(name: str, **kwargs) -> Dict[str, Any]:
    """What ``visionzoo info`` prints: the pretrained cfg, the family's declarations, the model's timm attributes,
    its feature_info (built on the meta device) and the eval transform timm resolves from the pretrained cfg."""
    from dataclasses import asdict

    model = _meta_model(name, **kwargs)
    family = family_of(name.partition(".")[0])
    data_config = timm.data.resolve_model_data_config(model)
    transform = timm.data.create_transform(**data_config, is_training=False)
    info = {
        "model": name,
        "family": asdict(family),
        "params": sum(p.numel() for p in model.parameters()),
        "model_args": model_args(name, **kwargs),
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "head_hidden_size": getattr(model, "head_hidden_size", None),
        "feature_info": [dict(f) for f in model.feature_info],
        "pretrained_cfg": dict(model.pretrained_cfg),
        "data_config": data_config,
        "eval_transform": [repr(t) for t in getattr(transform, "transforms", [transform])],
    }
    return _jsonable(info)


def cmd_info(args: argparse.Namespace) -> int:
    info = model_info(_check_model(args.model), **_model_kwargs(args.model_kwargs))
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['model']}  (family {info['family']['name']}, {info['params']:,d} parameters, "
          f"{info['num_classes']} classes, {info['num_features']} features)")
    print("\nmodel args (what the registration passes to the model class):")
    for key, value in info["model_args"].items():
        print(f"  {key:24s} {value}")
    print("\npretrained cfg:")
    for key, value in info["pretrained_cfg"].items():
        if value not in (None, "", [], {}):
            print(f"  {key:24s} {value}")
    print("\nfeature_info (features_only=True levels):")
    for level, f in enumerate(info["feature_info"]):
        print(f"  {level}: {f['module']:24s} stride {f['reduction']:3d}  {f['num_chs']:5d} channels")
    print("\neval transform:")
    for step in info["eval_transform"]:
        print(f"  {step}")
    fam = info["family"]
    print(f"\nkernels: {', '.join(fam['kernels'])}; features: {fam['features']}; contract model "
          f"{fam['contract_model']}; pending: {', '.join(fam['pending']) or 'nothing'}")
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
    p = sub.add_parser("info", help="a model's pretrained cfg, feature_info and eval transform")
    p.add_argument("model", help="a registered name, optionally with a pretrained tag (vz_x.tag)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--model-kwargs", default=None, help="timm.create_model kwargs as a JSON object")
    p.set_defaults(func=cmd_info)
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
