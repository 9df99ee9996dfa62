"""FLOPs of zoo models that count attention by each op's own formula.

torch's ``FlopCounterMode`` counts the aten matmuls/convolutions it sees. The ``visionzoo.kernels`` ops are Python
functions that pick a backend per call: on the torch path the counter sees whatever that path happens to compute
(padded tiles, dense masked routes, folded projections), on the Triton path (or a custom op) nothing at all. So
:func:`count_flops` runs the model under ``FlopCounterMode`` with every public op replaced, in the modules that
call it, by a wrapper that

* evaluates the op's FLOPs formula (``visionzoo.kernels.OPS[name]``) on the call's own arguments, and
* replaces what the counter recorded inside the call by that formula.

Everything else (projections, MLPs, convolutions, the head) is FlopCounterMode's own count. Ops are discovered
through ``visionzoo.kernels.OPS``; nothing here names an op or a family. Models are run on the ``meta`` device by
default (shapes only: no memory, no time); a model whose ops need real values can be counted on ``cpu``.

Convention: 2 FLOPs per multiply-add, forward only, softmax/normalisation/elementwise work not counted (as
FlopCounterMode and each op's formula do).
"""
from __future__ import annotations

import contextlib
import inspect
import sys
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from visionzoo import kernels

__all__ = ["OpCounts", "attributed_ops", "count_flops", "count_model_flops", "op_flops"]


def _op_functions() -> Dict[str, Tuple[Callable, Callable]]:
    """name -> (public op function, its FLOPs formula), for every op in ``visionzoo.kernels.OPS``."""
    ops = {}
    for name, formula in kernels.OPS.items():
        fn = getattr(kernels, name)
        ops[name] = (getattr(fn, "_visionzoo_counted", fn), formula)  # the op itself while attributed_ops patches it
    return ops


def op_flops(name: str, *args, **kwargs) -> int:
    """The FLOPs formula of op ``name`` evaluated on the arguments of one call of that op.

    The call's arguments are bound to the op's signature; the formula receives those of its parameters that the op
    has by the same name (tensors as they are: the formulas accept tensors or shapes). A formula parameter the op
    lacks (``window_attention_flops(shape, ...)``) takes the shape of the op's first argument.
    """
    op, formula = _op_functions()[name]
    bound = inspect.signature(op).bind(*args, **kwargs)
    bound.apply_defaults()
    given = dict(bound.arguments)
    params = list(inspect.signature(formula).parameters.values())
    first = next(iter(given.values()))
    call_args: List = []
    call_kwargs: Dict = {}
    by_name = False  # once a parameter is left to its default, the later ones go by name
    for i, p in enumerate(params):
        if p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            named = {q.name for q in params}
            call_kwargs.update({k: v for k, v in given.items() if k not in named})
            continue
        if p.name in given:
            value = given[p.name]
        elif i == 0:
            value = tuple(first.shape) if isinstance(first, torch.Tensor) else first
        elif p.default is not p.empty:
            by_name = True
            continue
        else:
            raise TypeError(f"cannot map the arguments of {name} onto its FLOPs formula (parameter {p.name!r})")
        if p.kind is p.KEYWORD_ONLY or by_name:
            call_kwargs[p.name] = value
        else:
            call_args.append(value)
    return int(formula(*call_args, **call_kwargs))


class OpCounts:
    """Per op name, summed over calls: ``formula`` (the op's FLOPs formula, what is booked) and ``seen`` (what
    FlopCounterMode saw the selected backend compute inside the calls, which is discarded)."""

    def __init__(self) -> None:
        self.formula: Dict[str, int] = {}
        self.seen: Dict[str, int] = {}
        self.calls: Dict[str, int] = {}


@contextlib.contextmanager
def attributed_ops(counter: FlopCounterMode) -> Iterator[OpCounts]:
    """Inside the block, every public kernel op called from a ``visionzoo`` module adds its formula's FLOPs to
    ``counter`` instead of what the counter sees it compute. Yields an :class:`OpCounts`."""
    counts = OpCounts()
    ops = _op_functions()
    by_id = {id(fn): name for name, (fn, _) in ops.items()}
    patched: List[Tuple[object, str, Callable]] = []

    depth = [0]  # an op called inside another op's call is part of the outer op's work

    def wrap(name: str, fn: Callable) -> Callable:
        def counted(*args, **kwargs):
            if depth[0]:
                return fn(*args, **kwargs)
            before = counter.get_total_flops()
            snapshot = {mod: dict(ops_) for mod, ops_ in counter.flop_counts.items()}
            depth[0] += 1
            try:
                out = fn(*args, **kwargs)
            finally:
                depth[0] -= 1
            after = counter.get_total_flops()
            # forget what the backend computed inside the op, then book the formula under the op's name
            counter.flop_counts.clear()
            for mod, ops_ in snapshot.items():
                counter.flop_counts[mod].update(ops_)
            seen = after - before
            flops = op_flops(name, *args, **kwargs)
            for mod in _active_modules(counter):
                counter.flop_counts[mod][f"visionzoo.{name}"] += flops
            counts.formula[name] = counts.formula.get(name, 0) + flops
            counts.seen[name] = counts.seen.get(name, 0) + seen
            counts.calls[name] = counts.calls.get(name, 0) + 1
            return out
        counted._visionzoo_counted = fn
        return counted

    for mod_name, module in list(sys.modules.items()):
        if module is None or not (mod_name == "visionzoo" or mod_name.startswith("visionzoo.")):
            continue
        if mod_name.startswith("visionzoo.kernels."):
            continue  # the ops' own modules (``visionzoo.kernels`` itself is patched: ``kernels.op(...)`` calls)
        for attr, value in list(vars(module).items()):
            if callable(value) and id(value) in by_id:
                patched.append((module, attr, value))
                setattr(module, attr, wrap(by_id[id(value)], value))
    try:
        yield counts
    finally:
        for module, attr, value in reversed(patched):
            setattr(module, attr, value)


def _active_modules(counter: FlopCounterMode) -> List[str]:
    parents = getattr(counter, "mod_tracker", None)
    names = list(parents.parents) if parents is not None else ["Global"]
    return names or ["Global"]


def count_flops(model: torch.nn.Module, input_size: Sequence[int], batch: int = 1, device: str = "meta",
                attribute_ops: bool = True) -> Tuple[int, OpCounts]:
    """Forward FLOPs of ``model`` on one batch of ``input_size`` (C, H, W).

    Returns (total, :class:`OpCounts`); with ``attribute_ops=False`` the plain FlopCounterMode count of whatever
    the selected kernel backend computes (the op counts are then empty).
    """
    x = torch.zeros((batch, *input_size), device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        if attribute_ops:
            with attributed_ops(counter) as counts:
                model(x)
        else:
            counts = OpCounts()
            model(x)
    return counter.get_total_flops(), counts


def count_model_flops(name: str, input_size: Sequence[int], **kwargs) -> Tuple[int, OpCounts]:
    """:func:`count_flops` of the registered model ``name`` (built with ``kwargs``) on one ``input_size`` image, every
    op booked by its formula whatever ``VISIONZOO_KERNEL_BACKEND`` says (the reference paths need values). Shapes only
    (the meta device) where the model allows; a model that needs values (CPU autocast, dtype checks) runs on CPU."""
    import timm

    with kernels.use_backend("torch"):
        try:
            with torch.device("meta"):
                model = timm.create_model(name, **kwargs).eval()
            return count_flops(model, input_size)
        except (RuntimeError, NotImplementedError):
            model = timm.create_model(name, **kwargs).eval()
            return count_flops(model, input_size, device="cpu")
