"""Command line: ``visionzoo list | info | convert | bench | demo | config | train``.

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
        model = _meta_model(name, **kwargs)
    finally:
        tm.build_model_with_cfg = original
    # a registration that builds otherwise: what timm records (the caller's kwargs only)
    return seen or dict(getattr(model, "_model_args", None) or kwargs)


# ------------------------------------------------------------------------------------------------------ list

def model_summary(name: str, flops: bool = True, **kwargs) -> Dict[str, Any]:
    """One row of ``visionzoo list``: parameters (meta device), GFLOPs at the default input size (attention by each
    op's formula, ``visionzoo.flops``), pretrained tags, the minimum input size the family documents (absent when it
    declares none), and the kernels its family runs on."""
    from visionzoo.flops import count_model_flops

    model = _meta_model(name, **kwargs)
    cfg = timm.get_pretrained_cfg(name).to_dict()
    row: Dict[str, Any] = {
        "model": name,
        "family": family_of(name).name,
        "params": sum(p.numel() for p in model.parameters()),
        "input_size": list(cfg["input_size"]),
    }
    if flops:
        total, counts = count_model_flops(name, cfg["input_size"], **kwargs)
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
    elif flops:
        print("(GFLOPs: 2 per multiply-add, forward, one image at the default size, attention by each op's formula; "
              "papers usually quote multiply-adds, half this)")
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


# --------------------------------------------------------------------------------------------------- convert

def _fixed_input(input_size, batch: int = 2) -> torch.Tensor:
    """A deterministic input (a formula, no RNG state involved) of (batch, C, H, W)."""
    c, h, w = input_size
    grid = torch.arange(batch * c * h * w, dtype=torch.float64).reshape(batch, c, h, w)
    return torch.sin(0.37 * grid) * torch.cos(0.011 * grid)


def convert(name: str, checkpoint: str, out_dir: str, model_kwargs: Optional[Dict[str, Any]] = None,
            input_size: Optional[List[int]] = None, force: bool = False) -> Dict[str, Any]:
    """Convert ``checkpoint`` (an official file in any layout ``name``'s family filter accepts, or our own) into
    ``out_dir`` in timm's hub layout: ``model.safetensors`` (our key layout) and ``config.json`` (the architecture,
    the model args, the pretrained cfg with its eval transform), written by timm's ``save_for_hf``.

    The checkpoint is read by the safe reader (``models._checkpoint.read_checkpoint``, through the model's
    ``load_pretrained``) and mapped by the family's ``checkpoint_filter_fn``; a checkpoint that does not fit raises
    with its keys named. The result is validated before anything appears in ``out_dir``: a second model loads the
    written file strictly, by the same route as ``timm.create_model(name, pretrained=True,
    pretrained_cfg_overlay=dict(file=...))``, and its logits on a fixed input must equal the first model's exactly.
    Returns a summary (files, max abs logit difference, parameter count).
    """
    import os
    import shutil
    import tempfile

    from safetensors.torch import load_file
    from timm.models._hub import save_for_hf

    kwargs = dict(model_kwargs or {})
    base = _check_model(name).partition(".")[0]
    if not os.path.isfile(checkpoint):
        raise CliError(f"checkpoint {checkpoint!r} is not a file")
    if os.path.exists(out_dir) and os.listdir(out_dir) and not force:
        raise CliError(f"{out_dir} exists and is not empty (--force replaces model.safetensors and config.json)")

    model = timm.create_model(name, **kwargs).eval()
    # every tensor must load, the classifier included: load_pretrained drops the classifier when num_classes differs
    # from the pretrained cfg's, which would save a random head, so the cfg is told the model's own num_classes
    model.pretrained_cfg = {**model.pretrained_cfg, "num_classes": model.num_classes}
    try:
        model.load_pretrained(checkpoint)  # safe reader, wrapper keys, the family's filter, strict load
    except (ValueError, RuntimeError, KeyError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = "; ".join(lines[:1] + [line for line in lines[1:] if line.startswith(("size mismatch", "Missing",
                                                                                          "Unexpected"))][:2])
        classifier = model.pretrained_cfg.get("classifier") or "\0"
        hint = (" (a classifier of another size: pass num_classes in --model-kwargs)"
                if f"size mismatch for {classifier}." in detail and "num_classes" not in kwargs else "")
        raise CliError(f"{checkpoint} does not load into {name}{' ' + json.dumps(kwargs) if kwargs else ''}: "
                       f"{detail}{hint}") from None
    x = _fixed_input(input_size or model.pretrained_cfg["input_size"]).float()
    with torch.no_grad():
        logits = model(x)

    parent = os.path.dirname(os.path.abspath(out_dir))  # staged beside out_dir (same file system) when it exists
    staging = tempfile.mkdtemp(prefix=".visionzoo-convert-", dir=parent if os.path.isdir(parent) else None)
    try:
        save_for_hf(model, staging, model_args=kwargs or None, safe_serialization=True)
        weights = os.path.join(staging, "model.safetensors")
        # validation 1: the file holds exactly the model's tensors (strict), nothing of the official layout
        reloaded = timm.create_model(name, **kwargs).eval()
        reloaded.load_state_dict(load_file(weights), strict=True)
        # validation 2: the pretrained-file route users take, then the logits
        # (the overlay's num_classes: the classifier is dropped when it differs from the pretrained cfg's)
        overlay = dict(file=weights, num_classes=model.num_classes)
        via_timm = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()
        with torch.no_grad():
            diffs = [(m(x) - logits).abs().max().item() for m in (reloaded, via_timm)]
        if max(diffs) != 0.0:
            raise CliError(f"validation failed: the written weights give other logits (max abs diff: strict reload "
                           f"{diffs[0]:.3g}, pretrained-file route {diffs[1]:.3g})")
        os.makedirs(out_dir, exist_ok=True)
        written = []
        for fname in sorted(os.listdir(staging)):
            shutil.move(os.path.join(staging, fname), os.path.join(out_dir, fname))
            written.append(os.path.join(out_dir, fname))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"model": name, "checkpoint": checkpoint, "files": written,
            "params": sum(p.numel() for p in model.parameters()),
            "input": list(x.shape), "max_abs_logit_diff": max(diffs),
            "load_with": f"timm.create_model({base!r}, pretrained=True, pretrained_cfg_overlay=dict(file="
                         f"{os.path.join(out_dir, 'model.safetensors')!r}, num_classes={model.num_classes})"
                         f"{', **model_args' if kwargs else ''}) or timm.create_model('local-dir:{out_dir}', "
                         f"pretrained=True)"}


def cmd_convert(args: argparse.Namespace) -> int:
    summary = convert(args.model, args.checkpoint, args.out_dir, _model_kwargs(args.model_kwargs),
                      input_size=_parse_size(args.size, in_chans=None) if args.size else None, force=args.force)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"converted {args.checkpoint} -> {args.out_dir} ({summary['params']:,d} parameters)")
        for f in summary["files"]:
            print(f"  {f}")
        print(f"validated: strict reload and timm's pretrained-file route give the same logits on a fixed "
              f"{tuple(summary['input'])} input (max abs diff {summary['max_abs_logit_diff']})")
        print(f"load with: {summary['load_with']}")
    return 0


def _parse_size(text: str, in_chans: Optional[int] = 3) -> List[int]:
    """``HxW`` or ``S`` -> [C, H, W] (C = 3 unless ``in_chans``)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise CliError(f"size must be HxW or S with positive integers, got {text!r}")
    return [in_chans or 3, *parts]


# ----------------------------------------------------------------------------------------------------- bench

def _check_anchor(name: str) -> str:
    if name not in timm.list_models():
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CliError(f"unknown anchor {name!r} (an installed timm model){hint}")
    return name


def _check_size(name: str, size: List[int], kwargs: Dict[str, Any]) -> None:
    """An impossible size for ``name`` is a CliError: below the documented minimum, or other than a fixed size."""
    cfg = timm.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None else {}
    h, w = size[1:]
    min_size = cfg.get("min_input_size")
    if min_size and (h < min_size[1] or w < min_size[2]):
        raise CliError(f"{name} needs inputs of at least {min_size[1]}x{min_size[2]}, got {h}x{w}")
    if cfg.get("fixed_input_size") and "img_size" not in kwargs and (h, w) != tuple(cfg["input_size"][1:]):
        raise CliError(f"{name} takes only {cfg['input_size'][1]}x{cfg['input_size'][2]} inputs, got {h}x{w}")


def _official_specs(models: List[str], checkout: str, size: List[int], kwargs: Dict[str, Any]) -> List[Any]:
    """The first model and the official implementation of it, built from a checkout (``models/_official.py``),
    holding the same weights."""
    from visionzoo.bench import BenchSpec
    from visionzoo.models._official import official_pair

    name = models[0]
    official = family_of(name).official
    if official is None:
        raise CliError(f"{name}: the {family_of(name).name} family has no runnable official code; pass a timm "
                       f"model as --anchor instead")
    if kwargs:
        raise CliError("--model-kwargs cannot be combined with --anchor official=PATH (the official constructor "
                       "fixes the architecture)")
    if size[1] != size[2]:
        raise CliError(f"--anchor official=PATH builds the official model for a square size, got {size[1]}x{size[2]}")
    try:
        ours, model = official_pair(name, checkout, size[1])
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    except ImportError as e:
        raise CliError(f"the official code of {official.repo} imports {e.name!r}, which is not installed here: "
                       f"install it (pip install {e.name}) and run again") from None
    return [BenchSpec(name, "model", model=ours), BenchSpec(f"official {official.repo}", "anchor", model=model)]


def cmd_bench(args: argparse.Namespace) -> int:
    import csv

    from visionzoo.bench import BenchSpec, bench, machine_line

    kwargs = _model_kwargs(args.model_kwargs)
    size = _parse_size(args.size)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        raise CliError("--batch and --repeats must be at least 1, --warmup at least 0")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    specs = []
    for name in args.models:
        _check_size(_check_model(name), size, kwargs)
        specs.append(BenchSpec(name, "model", kwargs))
    for name in args.anchor or []:
        if name.startswith("official="):
            # the first model's spec becomes its twin holding the official model's weights
            specs = _official_specs(args.models, name[len("official="):], size, kwargs) + specs[1:]
            continue
        _check_size(_check_anchor(name), size, {})
        specs.append(BenchSpec(name, "anchor"))
    try:
        rows = bench(specs, args.batch, size[1:], mode=args.mode, dtype=args.dtype, compile=args.compile,
                     channels_last=args.channels_last, repeats=args.repeats, warmup=args.warmup, device=device,
                     progress=not (args.json or args.csv), memory=not args.no_memory)
    except (ValueError, TypeError) as e:  # a model refusing its kwargs or the input
        raise CliError(str(e).splitlines()[0]) from None
    if args.json:
        print(json.dumps({"machine": machine_line(device), "rows": rows}, indent=1))
    elif args.csv:
        fields = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(sys.stdout, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(f"{machine_line(device)}\n{args.mode}, batch {args.batch}, {size[1]}x{size[2]}, {args.dtype}"
              f"{', compiled' if args.compile else ''}{', channels_last' if args.channels_last else ''}; "
              f"median of {args.repeats} interleaved repeats")
        vs = rows[0].get("vs")
        print(f"{'model':28s} {'role':6s} {'ms/step':>10s} {'img/s':>10s} {'peak MiB':>10s}"
              + (f" {'img/s ratio':>12s} {'mem ratio':>10s}" if vs else ""))
        for r in rows:
            peak = f"{r['peak_mb']:10.1f}" if r["peak_mb"] is not None else f"{'-':>10s}"
            line = f"{r['model']:28s} {r['role']:6s} {r['ms_per_step']:10.2f} {r['images_per_s']:10.2f} {peak}"
            if vs:
                mem = f"{r['peak_mb_ratio']:10.3f}" if r["peak_mb_ratio"] is not None else f"{'-':>10s}"
                line += f" {r['images_per_s_ratio']:12.3f} {mem}"
            print(line)
        if vs:
            print(f"(ratios: ours / {vs}; img/s above 1 and memory below 1 favour ours)")
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


# ------------------------------------------------------------------------------------------- config, train

def cmd_config(args: argparse.Namespace) -> int:
    """The path of a shipped config (a recipe or a det/seg config, ``visionzoo.recipes``), or the names."""
    from visionzoo import recipes

    if args.list is not None or not args.name:
        pattern = args.list or args.name or "*"
        pattern = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
        names = [n for n in recipes.recipe_names() + recipes.mm_config_names() if fnmatch.fnmatch(n, pattern)]
        if not names:
            raise CliError(f"no shipped config matches {pattern!r}")
        print("\n".join(names))
        return 0
    try:
        print(recipes.config_path(args.name))
    except recipes.UnknownConfig as e:
        raise CliError(str(e)) from None
    return 0


def cmd_train(argv: List[str]) -> int:
    """``train.py`` for installed users: Lightning's CLI over visionzoo.training, ``--config`` a file or a recipe
    name."""
    from visionzoo.training.cli import main as train_main

    train_main(argv, prog="visionzoo train")
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
    p = sub.add_parser("convert", help="an official checkpoint to a timm hub-layout directory, validated")
    p.add_argument("model", help="the registered model the checkpoint belongs to")
    p.add_argument("checkpoint", help="official .pth/.pt/.safetensors (any layout the family's filter accepts)")
    p.add_argument("out_dir", help="where model.safetensors and config.json go (pushable to the HF hub as is)")
    p.add_argument("--model-kwargs", default=None, help="timm.create_model kwargs as a JSON object "
                   "(e.g. num_classes of a fine-tuned checkpoint); written to config.json's model_args")
    p.add_argument("--size", default=None, help="HxW of the validation input (default: the pretrained cfg's)")
    p.add_argument("--force", action="store_true", help="write into a non-empty out_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_convert)
    p = sub.add_parser("bench", help="throughput and peak memory, optionally against anchors in the same process")
    p.add_argument("models", nargs="+", help="registered vz_ models")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--size", default="224x224", help="HxW (or S)")
    p.add_argument("--mode", choices=("eval", "train"), default="eval",
                   help="eval: no-grad forward; train: forward + backward")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile every model (compiled during warm-up)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--anchor", action="append",
                   help="a timm model run interleaved in the same process (repeatable), or official=PATH: the "
                        "official implementation of the first MODEL from a checkout of its repository, same weights")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per model before timing")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--model-kwargs", default=None, help="timm.create_model kwargs for the zoo models, JSON")
    p.add_argument("--no-memory", action="store_true", help="skip the profiled peak-memory call")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument("--csv", action="store_true")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("demo", help="build every model, classify a sample photo")
    p.add_argument("--model", default="vz_maxvit_tiny")
    p.add_argument("--weights", default=None, help="a checkpoint file for --model (safetensors or .pth)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("config", help="the path of a shipped recipe or det/seg config, or their names (--list)")
    p.add_argument("name", nargs="?", help="vz_maxvit_tiny, quickstart, mmdet/davit/<file>.py or the file name")
    p.add_argument("--list", nargs="?", const="", default=None, metavar="PATTERN",
                   help="list the shipped configs (fnmatch pattern or substring, e.g. mmseg)")
    p.set_defaults(func=cmd_config)
    sub.add_parser("train", add_help=False,
                   help="train.py without a checkout: visionzoo train fit --config vz_maxvit_tiny --data.root DIR "
                        "(Lightning's CLI; visionzoo train --help)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # everything after `train` is Lightning's
        return cmd_train(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"visionzoo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
