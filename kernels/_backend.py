"""Backend selection shared by every op in ``visionzoo.kernels``.

Each op has three implementations:

* ``reference``: plain PyTorch written to be obviously right; the test oracle.
* ``torch``: the fast PyTorch path (what CPU users run).
* ``triton``: fused Triton kernels (CUDA tensors; CPU tensors only under ``TRITON_INTERPRET=1``).

Default: ``triton`` when every tensor is on CUDA and Triton imports, else ``torch``.
Override, strongest first: the :func:`use_backend` context manager, then the
``VISIONZOO_KERNEL_BACKEND`` environment variable (read at every call).
"""
from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import Iterator, Optional

import torch

BACKENDS = ("triton", "torch", "reference")
ENV_VAR = "VISIONZOO_KERNEL_BACKEND"

_forced: Optional[str] = None


def _check_name(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source}={name!r} is not a kernel backend; choose one of {', '.join(BACKENDS)}")
    return name


@contextlib.contextmanager
def use_backend(name: Optional[str]) -> Iterator[None]:
    """Force a backend for every op called inside the block (``None`` restores automatic choice)."""
    global _forced
    if name is not None:
        _check_name(name, "use_backend")
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


def forced_backend() -> Optional[str]:
    if _forced is not None:
        return _forced
    value = os.environ.get(ENV_VAR, "").strip().lower()
    return _check_name(value, ENV_VAR) if value else None


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def triton_interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_interpreter_active() -> bool:
    """True when the interpreter can actually run kernels in this process.

    Triton decides per ``@triton.jit`` function, at decoration time, whether to interpret it; its own
    library (``tl.zeros``, ``tl.sum``, ``tl.max`` ...) is decorated when ``triton`` is first imported,
    and timm / ``torch._dynamo`` import triton. So ``TRITON_INTERPRET=1`` must be set before the first
    ``import triton`` of the process, not merely before our kernels are imported.
    """
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(tl.zeros, InterpretedFunction)


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def choose_backend(op: str, *tensors: torch.Tensor, triton_supported: Optional[str] = None) -> str:
    """Pick the backend for one call of ``op`` on ``tensors``.

    ``triton_supported`` is None when the Triton kernel can take these inputs, else the reason it cannot
    (dtype, head dim, ...): an automatic choice then falls back to ``torch`` with a one-time warning, and a
    forced ``triton`` raises.
    """
    forced = forced_backend()
    on_cuda = all(t.is_cuda for t in tensors)
    if forced == "triton":
        if not triton_available():
            raise RuntimeError(f"{op}: backend 'triton' was requested but triton does not import")
        if triton_supported is not None:
            raise ValueError(f"{op}: the Triton kernel does not support these inputs: {triton_supported}")
        if not on_cuda and not triton_interpreting():
            raise RuntimeError(
                f"{op}: backend 'triton' on CPU tensors needs TRITON_INTERPRET=1 in the environment "
                "(the Triton interpreter), set before triton is first imported")
        if not on_cuda and not triton_interpreter_active():
            raise RuntimeError(
                f"{op}: TRITON_INTERPRET=1 was set after triton had been imported (timm and torch._dynamo "
                "import it), so Triton's own functions are not interpreted; set it before the first import "
                "of triton, timm or visionzoo in the process")
        return "triton"
    if forced is not None:
        return forced
    if on_cuda and triton_available():
        if triton_supported is None:
            return "triton"
        _warn_once(f"{op}: falling back to the torch path ({triton_supported})")
    return "torch"


def autocast_disabled(device_type: str):
    """``torch.autocast(device_type, enabled=False)``, or nothing on a device that autocast does not know (``meta``:
    the shape-only runs of ``visionzoo.flops``, where ``torch.autocast`` would raise)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype of an enclosing autocast region on ``device_type``; None when none is active (or the device has no
    autocast, as ``meta``)."""
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None
