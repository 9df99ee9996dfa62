"""Sparse attention, the fast PyTorch path (what CPU users run; the fallback on GPU).

Layout: k and v are flattened once into (B*heads*N, D) rows (one copy each, the size of the input), the sparse
queries into (B*heads*M, Dqk) rows, M = N - dense_queries. Sparse queries are then processed in chunks of rows:
for a chunk of ``c`` queries the rows of their K selected keys are gathered with ``index_select`` (``c*K``
rows of k and of v), and the scores and the weighted sum run as batched (1 x D) @ (D x K) and (1 x K) @ (K x Dv)
matmuls. The chunk is sized so that the gathered rows and the per-entry temporaries of the backward stay under
``CHUNK_BYTES``: memory is O(N*K), never the (B, heads, N, N) scores of the dense formulation, and never the
whole gathered (B, heads, M, K, D) copy. The ``dense_queries`` leading queries attend to all N keys with
ordinary batched matmuls, chunked over (image, head) pairs.

Autograd goes through :class:`_SparseAttention`, which saves q, k, v, the index and the output (no gathered
rows, no probabilities) and recomputes each chunk in the backward; dK and dV of the gathered rows are summed
into their keys with ``index_add_`` (deterministic on CPU; on CUDA, where this path is only the fallback, it
uses atomics). Everything is shape-driven Python control flow, so ``torch.compile`` traces it without graph
breaks.
"""
from __future__ import annotations

import torch

# Budget for one chunk's gathered rows and per-entry temporaries (forward and backward).
CHUNK_BYTES = 32 * 2 ** 20


def sparse_chunk_rows(rows: int, kk: int, dqk: int, dv: int, elem: int) -> int:
    """Sparse queries per chunk: gathered k and v rows (input dtype), their dK/dV terms (fp32) and four
    score-sized fp32 temporaries per query, within CHUNK_BYTES."""
    per_row = kk * ((dqk + dv) * (elem + 4) + 16)
    return max(1, min(rows, CHUNK_BYTES // max(1, per_row)))


def dense_chunk_groups(groups: int, dense: int, n: int) -> int:
    """(image, head) pairs per chunk of the dense rows: three (dense x N) fp32 temporaries each."""
    per_group = 12 * dense * n
    return max(1, min(groups, CHUNK_BYTES // max(1, per_group)))


def _flat_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, N, heads, D) -> (B*heads*N, D): row (b*heads + h)*N + i is token i of head h in image b."""
    return x.transpose(1, 2).reshape(-1, x.shape[-1])


class _SparseAttention(torch.autograd.Function):
    """Saves q, k, v, index and the output only; gathers and probabilities are recomputed in backward."""

    @staticmethod
    def forward(ctx, q, k, v, index, scale, dense):
        B, N, nh, dqk = q.shape
        dv = v.shape[-1]
        M, kk = index.shape[2], index.shape[3]
        G = B * nh  # (image, head) pairs
        acc = torch.promote_types(q.dtype, torch.float32)
        kf, vf = _flat_rows(k), _flat_rows(v)  # (G*N, D)
        out = q.new_empty(B, N, nh, dv)
        out_h = out.transpose(1, 2)  # (B, heads, N, Dv) view of the output
        if M > 0:
            qs = q.transpose(1, 2)[:, :, dense:].reshape(G * M, dqk)
            idx = index.reshape(G * M, kk)
            base = torch.div(torch.arange(G * M, device=q.device), M, rounding_mode="floor") * N
            os_ = v.new_empty(G * M, dv)
            step = sparse_chunk_rows(G * M, kk, dqk, dv, q.element_size())
            for r0 in range(0, G * M, step):
                r1 = min(G * M, r0 + step)
                rows = (idx[r0:r1].long() + base[r0:r1, None]).reshape(-1)
                kc = kf.index_select(0, rows).view(r1 - r0, kk, dqk)
                vc = vf.index_select(0, rows).view(r1 - r0, kk, dv)
                s = torch.bmm((qs[r0:r1] * scale).unsqueeze(1), kc.transpose(1, 2))  # (c, 1, K)
                p = torch.softmax(s, dim=-1, dtype=acc)
                os_[r0:r1] = torch.bmm(p.to(vc.dtype), vc).squeeze(1)
            out_h[:, :, dense:] = os_.view(B, nh, M, dv)
        if dense > 0:
            qd = q.transpose(1, 2)[:, :, :dense].reshape(G, dense, dqk)
            kg, vg = kf.view(G, N, dqk), vf.view(G, N, dv)
            od = v.new_empty(G, dense, dv)
            step = dense_chunk_groups(G, dense, N)
            for g0 in range(0, G, step):
                g1 = min(G, g0 + step)
                s = torch.bmm(qd[g0:g1] * scale, kg[g0:g1].transpose(1, 2))  # (c, dense, N)
                p = torch.softmax(s, dim=-1, dtype=acc)
                od[g0:g1] = torch.bmm(p.to(vg.dtype), vg[g0:g1])
            out_h[:, :, :dense] = od.view(B, nh, dense, dv)
        ctx.save_for_backward(q, k, v, index, out)
        ctx.scale, ctx.dense = scale, dense
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, index, out = ctx.saved_tensors
        scale, dense = ctx.scale, ctx.dense
        B, N, nh, dqk = q.shape
        dv = v.shape[-1]
        M, kk = index.shape[2], index.shape[3]
        G = B * nh
        acc = torch.promote_types(q.dtype, torch.float32)  # fp32 sums for fp16/bf16 gradients
        kf, vf = _flat_rows(k), _flat_rows(v)
        delta = (do.to(acc) * out.to(acc)).sum(-1).transpose(1, 2)  # (B, heads, N): rowsum(dO * O)
        dq = torch.empty(B, nh, N, dqk, dtype=acc, device=q.device)
        dkf = torch.zeros(G * N, dqk, dtype=acc, device=q.device)
        dvf = torch.zeros(G * N, dv, dtype=acc, device=q.device)
        if M > 0:
            qs = q.transpose(1, 2)[:, :, dense:].reshape(G * M, dqk)
            dos = do.transpose(1, 2)[:, :, dense:].reshape(G * M, dv)
            delta_s = delta[:, :, dense:].reshape(G * M)
            idx = index.reshape(G * M, kk)
            base = torch.div(torch.arange(G * M, device=q.device), M, rounding_mode="floor") * N
            dqs = torch.empty(G * M, dqk, dtype=acc, device=q.device)
            step = sparse_chunk_rows(G * M, kk, dqk, dv, q.element_size())
            for r0 in range(0, G * M, step):
                r1 = min(G * M, r0 + step)
                rows = (idx[r0:r1].long() + base[r0:r1, None]).reshape(-1)
                kc = kf.index_select(0, rows).view(r1 - r0, kk, dqk)
                vc = vf.index_select(0, rows).view(r1 - r0, kk, dv)
                qc, doc = qs[r0:r1].unsqueeze(1), dos[r0:r1].unsqueeze(1)  # (c, 1, D)
                p = torch.softmax(torch.bmm(qc * scale, kc.transpose(1, 2)), dim=-1, dtype=acc)  # (c, 1, K)
                dp = torch.bmm(doc, vc.transpose(1, 2)).to(acc)
                ds = dp.sub_(delta_s[r0:r1, None, None]).mul_(p)  # dL/d(scale * q.k)
                dqs[r0:r1] = torch.bmm(ds.to(kc.dtype), kc).squeeze(1)
                # Per-entry terms, summed into their keys: dK_e = ds_e q_i, dV_e = p_e dO_i.
                dkf.index_add_(0, rows, (ds.transpose(1, 2) * qc).reshape(-1, dqk), alpha=scale)
                dvf.index_add_(0, rows, (p.transpose(1, 2) * doc).reshape(-1, dv))
            dq[:, :, dense:] = dqs.view(B, nh, M, dqk)
        if dense > 0:
            qd = q.transpose(1, 2)[:, :, :dense].reshape(G, dense, dqk)
            dod = do.transpose(1, 2)[:, :, :dense].reshape(G, dense, dv)
            delta_d = delta[:, :, :dense].reshape(G, dense, 1)
            kg, vg = kf.view(G, N, dqk), vf.view(G, N, dv)
            dkg, dvg = dkf.view(G, N, dqk), dvf.view(G, N, dv)
            dqd = torch.empty(G, dense, dqk, dtype=acc, device=q.device)
            step = dense_chunk_groups(G, dense, N)
            for g0 in range(0, G, step):
                g1 = min(G, g0 + step)
                qc, doc = qd[g0:g1], dod[g0:g1]
                p = torch.softmax(torch.bmm(qc * scale, kg[g0:g1].transpose(1, 2)), dim=-1, dtype=acc)
                dp = torch.bmm(doc, vg[g0:g1].transpose(1, 2)).to(acc)
                ds = dp.sub_(delta_d[g0:g1]).mul_(p)  # (c, dense, N)
                dqd[g0:g1] = torch.bmm(ds.to(kg.dtype), kg[g0:g1])
                dkg[g0:g1] += torch.bmm(ds.transpose(1, 2), qc.to(acc)).mul_(scale)
                dvg[g0:g1] += torch.bmm(p.transpose(1, 2), doc.to(acc))
            dq[:, :, :dense] = dqd.view(B, nh, dense, dqk)
        dq = dq.mul_(scale).transpose(1, 2).to(q.dtype)
        dk = dkf.view(B, nh, N, dqk).transpose(1, 2).to(k.dtype)
        dv_ = dvf.view(B, nh, N, dv).transpose(1, 2).to(v.dtype)
        return dq, dk, dv_, None, None, None


def sparse_attention_torch(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        index: torch.Tensor,
        scale: float,
        dense_queries: int,
) -> torch.Tensor:
    """Inputs validated by :func:`visionzoo.kernels.sparse_attention`. Returns (B, N, heads, Dv), contiguous."""
    return _SparseAttention.apply(q, k, v, index, float(scale), int(dense_queries))
