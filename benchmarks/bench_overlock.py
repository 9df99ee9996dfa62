"""vz_overlock_t against the official OverLoCK-T (LMMMEng/OverLoCK ``models/overlock.py``), in one process, on CPU.

The official file imports ``natten.functional.na2d_av`` (natten 0.17, Linux/CUDA wheels only) unconditionally. Here
that import is answered by a stand-in module whose ``na2d_av`` is the unfold maths of the official
``models/contmix.py`` fallback (valid unfold, the window grid replicate-padded by k//2, weights x windows summed),
written here; the official file itself is loaded unmodified from a checkout you give. It also needs ``einops``
(``--extra-path`` adds a site-packages folder that has it) and ``mmengine.runner.load_checkpoint`` (installed).

    git clone https://github.com/LMMMEng/OverLoCK /tmp/official-overlock   # (or the search tool's fetch)
    .venv/bin/python benchmarks/bench_overlock.py --official /tmp/official-overlock \
        --extra-path /tmp/venv-overlock/lib/python3.11/site-packages
    .venv/bin/python benchmarks/bench_overlock.py --official ... --configs 224:8 --modes eval --repeats 3

Both models get the same weights (the official state dict, randomised BatchNorm statistics, loaded into ours through
``checkpoint_filter_fn``); every configuration reports the largest logit difference. A train step is the official
one: forward in training mode, cross-entropy on the main logits + 0.4 x on the auxiliary ones, backward. Prints a
markdown table; speedup = ours img/s / official img/s; peak memory = the peak of live CPU allocations in one step.
``--reparam`` adds eval rows for the re-parameterised forms (``model.reparam()`` on both sides).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types

import timm
import torch
import torch.nn.functional as F

import visionzoo  # noqa: F401  (registers vz_* models)
from visionzoo.models.overlock import checkpoint_filter_fn, unfold_na2d_av
from common import interleaved_medians, machine_line, markdown_table, peak_memory_mb

AUX_WEIGHT = 0.4  # the official --aux-loss-ratio


def load_official(root: str, extra_paths) -> types.ModuleType:
    for path in extra_paths:
        sys.path.append(path)
    natten = types.ModuleType("natten")
    natten.functional = types.ModuleType("natten.functional")
    natten.functional.na2d_av = unfold_na2d_av  # the official contmix.py's maths
    sys.modules.setdefault("natten", natten)
    sys.modules.setdefault("natten.functional", natten.functional)
    spec = importlib.util.spec_from_file_location("official_overlock", f"{root}/models/overlock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # timm's register_model looks the module up
    spec.loader.exec_module(module)
    return module


def build_pair(official: types.ModuleType):
    torch.manual_seed(0)
    anchor = official.overlock_t(use_gemm=False)
    with torch.no_grad():  # non-trivial BatchNorm statistics (init values hide swapped tensors)
        for m in anchor.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = timm.create_model("vz_overlock_t")
    ours.load_state_dict(checkpoint_filter_fn(anchor.state_dict(), ours))
    return ours, anchor


def _logits(out):
    return out["main"] if isinstance(out, dict) else out


def make_step(model: torch.nn.Module, x: torch.Tensor, mode: str, ours: bool):
    labels = torch.randint(0, 1000, (x.shape[0],), generator=torch.Generator().manual_seed(0))
    if mode == "eval":
        def step():
            with torch.no_grad():
                return model(x)
        return step

    def step():
        model.zero_grad(set_to_none=True)
        if ours:
            out = model.forward_train(x)
            main, aux = out["logits"], out["aux_logits"]
        else:
            out = model(x)
            main, aux = out["main"], out["aux"]
        (F.cross_entropy(main, labels) + AUX_WEIGHT * F.cross_entropy(aux, labels)).backward()
        return main
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="a checkout of LMMMEng/OverLoCK")
    parser.add_argument("--extra-path", nargs="*", default=[], help="site-packages with einops, if not installed")
    parser.add_argument("--configs", nargs="+", default=["224:8", "512:2"], help="size:batch pairs")
    parser.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip the (profiled) peak-memory call")
    parser.add_argument("--reparam", action="store_true", help="also eval both re-parameterised forms")
    args = parser.parse_args()

    official = load_official(args.official, args.extra_path)
    print(f"# OverLoCK-T on CPU: {machine_line()}\n", flush=True)
    ours, anchor = build_pair(official)
    rows = []

    def measure(label, pair, mode, size, batch):
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        for m in pair:
            m.train(mode == "train")
        steps = [make_step(pair[0], x, mode, True), make_step(pair[1], x, mode, False)]
        t0 = time.perf_counter()
        outs = [_logits(s()) for s in steps]
        warm = time.perf_counter() - t0
        diff = (outs[0].float() - outs[1].float()).abs().max().item()
        t_ours, t_off = interleaved_medians(steps, args.repeats)
        mem = ["-", "-"] if args.no_memory else [f"{peak_memory_mb(s):.0f}" for s in steps]
        rows.append({"model": label, "size": size, "batch": batch, "mode": mode,
                     "official img/s": f"{batch / t_off:.2f}", "ours img/s": f"{batch / t_ours:.2f}",
                     "speedup": f"{t_off / t_ours:.2f}x", "peak MB official": mem[1], "peak MB ours": mem[0],
                     "max logit diff": f"{diff:.1e}"})
        print(f"{rows[-1]}  (first calls {warm:.1f} s)", flush=True)

    for config in args.configs:
        size, batch = map(int, config.split(":"))
        for mode in args.modes:
            measure("T", (ours, anchor), mode, size, batch)
    if args.reparam:
        plain = ours.eval()
        x = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            before = plain(x)
        ours.reparam()
        anchor.reparam()
        with torch.no_grad():
            print(f"reparam: max logit change {(ours(x) - before).abs().max().item():.1e}", flush=True)
        for config in args.configs:
            size, batch = map(int, config.split(":"))
            measure("T reparam", (ours, anchor), "eval", size, batch)
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
