"""NAT / DiNAT on CPU: the neighbourhood-attention op against its anchors, and whole models against Swin-T.

    .venv/bin/python benchmarks/bench_dinat.py                 # op + models
    .venv/bin/python benchmarks/bench_dinat.py --parts op      # the op only
    PYTHONPATH=/path/to/natten-venv/site-packages .venv/bin/python benchmarks/bench_dinat.py   # with natten

Op (DiNAT-T stage-1 shapes: 2 heads x 32, k = 7; 224 input: 56x56 at batch 8, d = 1 and 8; 512 input: 128x128 at
batch 1, d = 1 and 16, the seg dilation):

* forward against natten 0.21's ``na2d`` (no rpb: natten >= 0.20 has none; its CPU path is the Flex-attention
  backend, forward only, scoring all N x N pairs under a mask), where natten is importable (a throwaway venv:
  ``pip install natten==0.21.7``; it is never a dependency); same q, k, v, outputs compared;
* forward + backward (rpb with a gradient) against a plain-PyTorch gather formulation, what users without NATTEN
  write: each query's k * k keys and values gathered (``x[:, neighbor_index]``), scores, softmax, weighted sum,
  autograd for the backward; same NATTEN 0.14 neighbourhoods, outputs and gradients compared; peak memory of both.

Models: vz_dinat_tiny vs vz_nat_tiny vs timm's swin_tiny_patch4_window7_224 (a user's alternative at the same
size, 28M parameters) at 224 and 512, eval (no-grad forward) and train step (forward, cross-entropy, backward),
fp32, batch 8 at 224 and 2 at 512 (``--batches`` to change), with peak memory.

Timings: medians of interleaved repeats (common.py); every ratio compares figures measured in the same run.
"""
from __future__ import annotations

import argparse

import timm
import torch

import visionzoo  # noqa: F401  (registers vz_* models)
from common import interleaved_medians, machine_line, make_step, markdown_table, peak_memory_mb
from visionzoo.kernels import neighborhood_attention, use_backend
from visionzoo.kernels._neighborhood import neighbor_index, rpb_index

HEADS, HEAD_DIM, K = 2, 32, 7
OP_CASES = [(224, 8, 56, 1), (224, 8, 56, 8), (512, 1, 128, 1), (512, 1, 128, 16)]  # (input, batch, side, dilation)


def gather_na(q, k, v, kernel_size, dilation, rpb, scale):
    """Plain PyTorch neighbourhood attention: k*k copies of K and V gathered per query (NATTEN 0.14 windows)."""
    B, H, W, nh, D = q.shape
    idx = neighbor_index(H, W, kernel_size, dilation, device=q.device)
    keys = k.reshape(B, H * W, nh, D)[:, idx]  # (B, N, k*k, heads, D)
    values = v.reshape(B, H * W, nh, D)[:, idx]
    scores = torch.einsum("bnhd,bnkhd->bhnk", q.reshape(B, H * W, nh, D) * scale, keys)
    scores = scores + rpb.flatten(1)[:, rpb_index(H, W, kernel_size, dilation, device=q.device)]
    return torch.einsum("bhnk,bnkhd->bnhd", scores.softmax(-1), values).reshape(B, H, W, nh, D)


def _natten():
    try:
        import natten
        return natten
    except ImportError:
        return None


def bench_op(repeats: int, cases) -> None:
    natten = _natten()
    scale = HEAD_DIM ** -0.5
    rows = []
    for size, B, side, d in cases:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(B, side, side, HEADS, HEAD_DIM, generator=g) for _ in range(3))
        rpb = torch.randn(HEADS, 2 * K - 1, 2 * K - 1, generator=g)
        row = {"input": size, "batch": B, "map": f"{side}x{side}", "d": d}
        # forward: ours vs natten (no rpb)
        with torch.no_grad(), use_backend("torch"):
            ours_fwd = lambda: neighborhood_attention(q, k, v, K, d)  # noqa: E731
            if natten is not None:
                theirs_fwd = lambda: natten.na2d(q, k, v, kernel_size=K, dilation=d)  # noqa: E731
                diff = (ours_fwd() - theirs_fwd()).abs().max().item()
                t_ours, t_nat = interleaved_medians([ours_fwd, theirs_fwd], repeats)
                row.update({"fwd ms": f"{t_ours * 1e3:.0f}", "natten fwd ms": f"{t_nat * 1e3:.0f}",
                            "fwd speedup": f"{t_nat / t_ours:.1f}x", "max diff": f"{diff:.1e}"})
            else:
                (t_ours,) = interleaved_medians([ours_fwd], repeats)
                row.update({"fwd ms": f"{t_ours * 1e3:.0f}", "natten fwd ms": "(not installed)"})
        # forward + backward: ours vs the gather formulation (rpb with a gradient)
        leaves = [t.clone().requires_grad_() for t in (q, k, v, rpb)]
        grad_out = torch.randn(B, side, side, HEADS, HEAD_DIM, generator=g)

        def step(fn):
            def run():
                for t in leaves:
                    t.grad = None
                out = fn(*leaves[:3], K, d, rpb=leaves[3], scale=scale) if fn is neighborhood_attention \
                    else fn(*leaves[:3], K, d, leaves[3], scale)
                out.backward(grad_out)
                return out
            return run

        with use_backend("torch"):
            ours_step, gather_step = step(neighborhood_attention), step(gather_na)
            out_a = ours_step().detach()
            grads_a = [t.grad.clone() for t in leaves]
            out_b = gather_step().detach()
            grad_diff = max((a - t.grad).abs().max().item() for a, t in zip(grads_a, leaves))
            t_ours, t_gather = interleaved_medians([ours_step, gather_step], max(2, repeats // 2))
            m_ours, m_gather = peak_memory_mb(ours_step), peak_memory_mb(gather_step)
        row.update({"fwd+bwd ms": f"{t_ours * 1e3:.0f}", "gather fwd+bwd ms": f"{t_gather * 1e3:.0f}",
                    "fwd+bwd speedup": f"{t_gather / t_ours:.1f}x",
                    "peak MB (ours / gather)": f"{m_ours:.0f} / {m_gather:.0f}",
                    "max diff (out, grads)": f"{(out_a - out_b).abs().max().item():.0e}, {grad_diff:.0e}"})
        rows.append(row)
        print(row, flush=True)
    print()
    print(markdown_table(rows))


MODELS = ["vz_dinat_tiny", "vz_nat_tiny", "swin_tiny_patch4_window7_224"]


def bench_models(repeats: int, sizes, batches, modes) -> None:
    rows = []
    for size, batch in zip(sizes, batches):
        models = []
        for name in MODELS:
            kwargs = dict(img_size=size) if name.startswith("swin") else {}
            models.append(timm.create_model(name, **kwargs))
        x = torch.randn(batch, 3, size, size)
        for mode in modes:
            for m in models:
                m.train(mode == "train")
            steps = [make_step(m, x, mode, "fp32") for m in models]
            times = interleaved_medians(steps, repeats)
            mems = [peak_memory_mb(s) for s in steps]
            row = {"size": size, "batch": batch, "mode": mode}
            for name, t, mem in zip(MODELS, times, mems):
                short = name.split("_patch")[0].replace("vz_", "")
                row[f"{short} ms"] = f"{t * 1e3:.0f}"
                row[f"{short} MB"] = f"{mem:.0f}"
            row["dinat / swin time"] = f"{times[0] / times[2]:.2f}"
            rows.append(row)
            print(row, flush=True)
    print()
    print(markdown_table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["op", "models"], choices=["op", "models"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="per size (default 8 at 224, 2 at 512)")
    parser.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    parser.add_argument("--op-cases", type=int, nargs="+", default=None, metavar="I",
                        help=f"indices into {OP_CASES}")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(machine_line(), "| natten", getattr(_natten(), "__version__", "not installed"))
    if "op" in args.parts:
        cases = OP_CASES if args.op_cases is None else [OP_CASES[i] for i in args.op_cases]
        bench_op(args.repeats, cases)
    if "models" in args.parts:
        batches = args.batches or [8 if s <= 224 else 2 for s in args.sizes]
        bench_models(args.repeats, args.sizes, batches, args.modes)


if __name__ == "__main__":
    main()
