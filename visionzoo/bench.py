"""Throughput and peak memory of models in one process, run interleaved (``visionzoo bench``).

Every model (ours and the anchors: any timm model) gets the same input; the steps are timed alternately
(A B A B ...) so that drift in the machine's speed hits all alike, and each figure is a median over repeats.
Peak memory is measured in a separate call: on CUDA the allocator's peak minus what was allocated before the call;
on CPU the highest sum of live allocations in a profiled call (activations, workspaces, gradients; not the weights,
which exist before the call), as ``benchmarks/common.py`` measures it.
"""
from __future__ import annotations

import contextlib
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import timm
import torch

from visionzoo.layers.linear import cpuinfo_field

__all__ = ["BenchSpec", "bench", "machine_line"]


@dataclass
class BenchSpec:
    name: str
    role: str = "model"  # "model" or "anchor"
    kwargs: Dict[str, Any] = field(default_factory=dict)
    model: Optional[torch.nn.Module] = None  # already built (an official anchor and its zoo twin); else by name


def machine_line(device: str) -> str:
    if device.startswith("cuda"):
        where = torch.cuda.get_device_name(torch.device(device))
    else:
        where = cpuinfo_field("model name") or platform.processor() or platform.machine()
        where += f" ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads"
    return f"{time.strftime('%Y-%m-%d %H:%M')}, {where}, torch {torch.__version__}, timm {timm.__version__}"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _autocast(device: str, dtype: str):
    if dtype == "bf16":
        return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(model: torch.nn.Module, x: torch.Tensor, mode: str, dtype: str, device: str) -> Callable[[], None]:
    """``eval``: a no-grad forward. ``train``: forward, cross-entropy on fixed labels, backward."""
    if mode == "eval":
        def step():
            with torch.no_grad(), _autocast(device, dtype):
                model(x)
    else:
        labels = None

        def step():
            nonlocal labels
            model.zero_grad(set_to_none=True)
            with _autocast(device, dtype):
                out = model(x)
            if out.ndim != 2:  # a headless model: a loss on its features
                loss = out.float().square().mean()
            else:
                if labels is None:
                    labels = torch.arange(x.shape[0], device=x.device) % out.shape[1]
                loss = torch.nn.functional.cross_entropy(out.float(), labels)
            loss.backward()
    return step


def peak_memory_mb(step: Callable[[], None], device: str) -> float:
    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2 ** 20


def bench(specs: Sequence[BenchSpec], batch: int, size: Sequence[int], mode: str = "eval", dtype: str = "fp32",
          compile: bool = False, channels_last: bool = False, repeats: int = 5, warmup: int = 1,
          device: str = "cpu", progress: bool = False, memory: bool = True) -> List[Dict[str, Any]]:
    """One row per spec: ms per step (median over ``repeats`` interleaved rounds), images/s, peak MiB; models are
    compared with the first anchor (``images_per_s_ratio`` = ours / anchor, ``peak_mb_ratio`` likewise)."""
    steps, rows = [], []
    for spec in specs:
        try:
            model = (spec.model if spec.model is not None else timm.create_model(spec.name, **spec.kwargs)).to(device)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{spec.name}: {e}") from e
        model.train(mode == "train")
        cfg = getattr(model, "pretrained_cfg", None) or {}  # an official anchor may have none
        in_chans = spec.kwargs.get("in_chans", cfg.get("input_size", (3,))[0])
        x = torch.randn(batch, in_chans, *size, generator=torch.Generator().manual_seed(0)).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        if compile:
            model = torch.compile(model)
        steps.append(make_step(model, x, mode, dtype, device))
        rows.append({"model": spec.name, "role": spec.role, "device": device, "batch": batch,
                     "size": f"{size[0]}x{size[1]}", "mode": mode, "dtype": dtype, "compile": compile,
                     "channels_last": channels_last,
                     "params": sum(p.numel() for p in model.parameters())})

    def timed(step):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        return time.perf_counter() - t0

    total = len(steps) * (warmup + repeats + (1 if memory else 0))
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=total, desc="bench", unit="step", leave=False)
        except ImportError:
            bar = None
    tick = (lambda: bar.update(1)) if bar is not None else (lambda: None)
    try:
        for step in steps:  # warm-up (and compilation) of each before any timing
            for _ in range(warmup):
                step()
                tick()
        times: List[List[float]] = [[] for _ in steps]
        for _ in range(repeats):
            for i, step in enumerate(steps):
                times[i].append(timed(step))
                tick()
        peaks = []
        for step in steps:
            peaks.append(peak_memory_mb(step, device) if memory else None)
            if memory:
                tick()
    finally:
        if bar is not None:
            bar.close()
    for row, t, peak in zip(rows, times, peaks):
        median = statistics.median(t)
        row.update(ms_per_step=round(median * 1e3, 3), images_per_s=round(batch / median, 3),
                   peak_mb=None if peak is None else round(peak, 2), repeats=repeats)
    anchor = next((r for r in rows if r["role"] == "anchor"), None)
    if anchor is not None:
        for row in rows:
            row["vs"] = anchor["model"]
            row["images_per_s_ratio"] = round(row["images_per_s"] / anchor["images_per_s"], 3)
            row["peak_mb_ratio"] = (round(row["peak_mb"] / anchor["peak_mb"], 3)
                                    if row["peak_mb"] is not None and anchor["peak_mb"] else None)
    return rows
