"""Shared by bench_l2vit.py and bench_ravlt.py: the official model (imported from a local checkout of the official
repository, never copied here), the same weights on both sides, the comparison table and the resolution sweep.

Official code: ``--official DIR`` (or the environment variable named by each script) is a checkout of
ChuanyangZheng/L2ViT or qhfan/RALA; RALA's classification file also needs ``einops`` and ``fvcore`` importable
(``pip install einops fvcore``, e.g. in a throwaway venv whose site-packages are appended with ``--extra-path``).
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from common import fresh_memory_mb, machine_line, make_step, markdown_table, peak_memory_mb


def timed_medians(steps: Sequence[Callable[[], object]], repeats: int,
                  warmup: int = 1) -> Tuple[List[float], List[float]]:
    """(wall, process CPU time) median seconds per call of each step, run alternately, the order flipping every
    repeat. On a shared machine waiting for a core counts in wall time and not in CPU time: with ``--threads 1`` the
    CPU-time ratio is the steadier figure."""
    for step in steps:
        for _ in range(warmup):
            step()
    wall: List[List[float]] = [[] for _ in steps]
    cpu: List[List[float]] = [[] for _ in steps]
    for r in range(repeats):
        order = range(len(steps)) if r % 2 == 0 else reversed(range(len(steps)))
        for i in order:
            w0, c0 = time.perf_counter(), time.process_time()
            steps[i]()
            cpu[i].append(time.process_time() - c0)
            wall[i].append(time.perf_counter() - w0)
    return [statistics.median(t) for t in wall], [statistics.median(t) for t in cpu]


def import_official(path: str, extra_paths: Sequence[str] = ()):
    """The official model file at ``path`` as a module (its directory first on sys.path while importing)."""
    for extra in extra_paths:
        if extra not in sys.path:
            sys.path.append(extra)
    if not os.path.isfile(path):
        raise SystemExit(f"official model file not found: {path} (pass --official <checkout of the official repo>)")
    sys.path.insert(0, os.path.dirname(path))
    try:
        spec = importlib.util.spec_from_file_location(f"official_{os.path.basename(path)[:-3]}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # timm's @register_model looks the module up
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


@torch.no_grad()
def randomize_like_trained(model: torch.nn.Module, seed: int = 0) -> None:
    """Redraw every parameter and BatchNorm statistic so that logits are O(1-10) (an initialised classifier's are
    ~0, which would hide differences): matrices N(0, 1/fan_in), norm scales 1 + 0.1 N(0, 1), other vectors 0.1 N(0, 1),
    running variances U(0.5, 1.5), then the classifier (``model.head``) scaled to a largest logit of 10 on a probe
    image. Layer scales, temperatures and buffers that are not statistics (RoPE tables) keep their values."""
    g = torch.Generator().manual_seed(seed)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not t.is_floating_point() or name.endswith("angle"):
            continue
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif name.endswith("running_mean"):
            t.copy_(0.1 * torch.randn(t.shape, generator=g))
        elif "gamma" in name or name.endswith("temperature"):
            continue  # layer scales and temperatures keep their initial values
        elif t.dim() == 1 and name.endswith("weight"):
            t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
        elif t.dim() <= 1:
            t.copy_(0.1 * torch.randn(t.shape, generator=g))
        else:
            t.copy_(torch.randn(t.shape, generator=g) * t[0].numel() ** -0.5)
    # then the classifier scaled so that the largest logit of a probe image is 10
    model.eval()
    probe = model(torch.randn(1, 3, 224, 224, generator=g)).abs().max()
    for p in model.head.parameters():
        p.mul_(10.0 / probe)


def compare(pairs: Dict[int, Tuple[torch.nn.Module, torch.nn.Module]], batches: Dict[int, int], modes, dtypes,
            repeats: int, memory: bool) -> List[Dict[str, object]]:
    """ours vs official per (size, mode, dtype): img/s, speedup, peak memory, logit differences. Every row starts
    from the initial weights and BatchNorm statistics (train steps update the statistics, and bf16 steps update them
    by slightly different amounts in the two models)."""
    rows = []
    initial = {id(m): copy.deepcopy(m.state_dict()) for pair in pairs.values() for m in pair}
    for size, (ours, official) in pairs.items():
        batch = batches[size]
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size))
        reference = {}
        for mode in modes:
            for m in (ours, official):
                m.train(mode == "train")
            for dtype in dtypes:
                for m in (ours, official):  # train steps move BatchNorm statistics: every row starts from the same
                    m.load_state_dict(initial[id(m)])
                steps = [make_step(m, x, mode, dtype) for m in (ours, official)]
                outs = [s().detach().float() for s in steps]
                if dtype == "fp32" and mode == "eval":
                    reference = dict(ours=outs[0], official=outs[1])
                diff = (outs[0] - outs[1]).abs().max().item()
                (t_ours, t_off), (c_ours, c_off) = timed_medians(steps, repeats)
                mem = [f"{peak_memory_mb(s):.0f}" for s in steps] if memory else ["-", "-"]
                row = {"size": size, "batch": batch, "mode": mode, "dtype": dtype,
                       "official img/s": f"{batch / t_off:.2f}", "ours img/s": f"{batch / t_ours:.2f}",
                       "speedup (wall)": f"{t_off / t_ours:.2f}x", "speedup (CPU time)": f"{c_off / c_ours:.2f}x",
                       "peak MB official": mem[1], "peak MB ours": mem[0],
                       "max logit": f"{outs[1].abs().max().item():.1f}", "ours - official": f"{diff:.1e}"}
                if dtype == "bf16" and mode == "eval" and reference:
                    row["bf16 - fp32 (ours / official)"] = (
                        f"{(outs[0] - reference['ours']).abs().max().item():.2f} / "
                        f"{(outs[1] - reference['official']).abs().max().item():.2f}")
                else:
                    row["bf16 - fp32 (ours / official)"] = "-"
                rows.append(row)
                print(row, flush=True)
    return rows


def stage_times(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> List[float]:
    """Median process CPU seconds of the stem and of each stage of a zoo model (eval, no grad), each run on its real
    input (CPU time: waiting for a core on a shared machine does not count; run with ``--threads 1``)."""
    inputs = []
    with torch.no_grad():
        h = x
        parts = [model.stem] + list(model.stages)
        for part in parts:
            inputs.append(h)
            h = part(h)
        steps = [(lambda p=p, i=i: p(i)) for p, i in zip(parts, inputs)]
        for s in steps:
            s()
        times = [[] for _ in steps]
        for _ in range(repeats):
            for k, s in enumerate(steps):
                t0 = time.process_time()
                s()
                times[k].append(time.process_time() - t0)
    return [statistics.median(t) for t in times]


def scaling(model: torch.nn.Module, shapes: Sequence[Tuple[int, int]], repeats: int,
            stage_kinds: Sequence[str]) -> List[Dict[str, object]]:
    """CPU time per megapixel of the whole model and of each stage (batch 1, fp32, eval) across input shapes, each
    stage's growth relative to the first shape, and the memory one forward gets fresh from the OS (page faults:
    with glibc's default settings, freed blocks above its mmap / trim thresholds go back to the OS and every page
    of them is zero-filled again on the next first touch, a cost per pixel that grows with the tensors)."""
    model.eval()
    rows, first = [], None
    for H, W in shapes:
        x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(H * W))
        per = stage_times(model, x, repeats)
        mpix = H * W / 1e6
        ms_per_mpix = [t * 1e3 / mpix for t in per]
        first = first or ms_per_mpix
        row = {"input": f"{H}x{W}", "total CPU ms": f"{sum(per) * 1e3:.0f}",
               "total ms/MPix": f"{sum(ms_per_mpix):.0f}", "stem ms/MPix": f"{ms_per_mpix[0]:.0f}"}
        for i, kind in enumerate(stage_kinds):
            growth = ms_per_mpix[i + 1] / first[i + 1]
            row[f"stage {i + 1} ({kind}) ms/MPix"] = f"{ms_per_mpix[i + 1]:.0f} ({growth:.2f}x)"
        with torch.no_grad():
            row["fresh MB / forward"] = f"{fresh_memory_mb(lambda: model(x)):.0f}"
        rows.append(row)
        print(row, flush=True)
    return rows


SQUARE = [(s, s) for s in (224, 320, 448, 512, 640, 768, 896, 1024)]
WIDE = [(224, 400), (288, 512), (360, 640), (448, 800), (576, 1024)]  # 16:9, long side up to 1024


def main(name: str, title: str, build_pair: Callable[[str, Sequence[str]], Tuple[torch.nn.Module, torch.nn.Module]],
         default_official: str, env: str, stage_kinds: Sequence[str], doc: str) -> None:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", default=os.environ.get(env, default_official),
                        help=f"checkout of the official repository (default ${env} or {default_official})")
    parser.add_argument("--extra-path", action="append", default=[],
                        help="a site-packages folder appended to sys.path (e.g. a venv with einops, fvcore)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 2], help="one per size")
    parser.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the (profiled) peak-memory call")
    parser.add_argument("--scaling", action="store_true", help="only the resolution sweep (ours, per stage)")
    parser.add_argument("--shapes", nargs="+", default=None,
                        help="the sweep's input shapes as HxW (default: 224..1024 square, then 16:9 up to 576x1024)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"# {title} on CPU: {machine_line()}\n", flush=True)
    if args.scaling:
        ours = build_pair(None, args.extra_path)[0]
        sweeps = (("square", SQUARE), ("16:9", WIDE))
        if args.shapes:
            sweeps = (("chosen shapes", [tuple(int(v) for v in hw.lower().split("x")) for hw in args.shapes]),)
        for label, shapes in sweeps:
            print(f"\n## CPU time per megapixel, {label}, batch 1, fp32 eval, {name}\n", flush=True)
            print(markdown_table(scaling(ours, shapes, args.repeats, stage_kinds)))
        return
    if len(args.batch) != len(args.sizes):
        raise SystemExit("--batch needs one value per --sizes value")
    ours, official = build_pair(args.official, args.extra_path)
    pairs = {size: (ours, official) for size in args.sizes}
    rows = compare(pairs, dict(zip(args.sizes, args.batch)), args.modes, args.dtypes, args.repeats,
                   not args.no_memory)
    print()
    print(markdown_table(rows))
