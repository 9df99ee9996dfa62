"""Command line: ``visionzoo list`` and ``visionzoo demo``."""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

import timm
import torch

import visionzoo


def _meta_params(name: str) -> int:
    with torch.device("meta"):
        model = timm.create_model(name)
    return sum(p.numel() for p in model.parameters())


def cmd_list(args: argparse.Namespace) -> int:
    """Every registered model with its parameter count (built on the meta device: no memory, no time)."""
    names = timm.list_models(args.filter)
    print(f"{'model':28s} {'params':>12s}  {'input':>9s}  weights (pretrained tags)")
    for name in names:
        cfg = timm.get_pretrained_cfg(name)
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*")]
        size = f"{cfg.input_size[1]}x{cfg.input_size[2]}"
        print(f"{name:28s} {_meta_params(name):12,d}  {size:>9s}  {', '.join(tags)}")
    return 0


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
    cmd_list(argparse.Namespace(filter="vz_*"))

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


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="visionzoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="registered models and their parameter counts")
    p.add_argument("filter", nargs="?", default="vz_*", help="fnmatch pattern (default: vz_*)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("demo", help="build every model, classify a sample photo")
    p.add_argument("--model", default="vz_maxvit_tiny")
    p.add_argument("--weights", default=None, help="a checkpoint file for --model (safetensors or .pth)")
    p.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
