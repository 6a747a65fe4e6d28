"""Glue of the fast backends (C++ ``cpu``, ``cuda`` from ``sdkd._C``; ``triton`` from ``sdkd.kernels``): pointer
calls on checked, contiguous inputs, and each backend's reasons for refusing an input."""

from __future__ import annotations

import torch

from .._dispatch import raw_stream
from .._dispatch import triton_reasons as shared_triton_reasons
from .projection import _SUPPORTED, MAX_M


# ----------------------------------------------------------------------------- fast backends (glue)
def _ext():
    from .._ext import extension

    return extension()


def _ext_reasons(kind: str) -> list[str]:
    from .._ext import cuda_unavailable_reason, unavailable_reason

    why = unavailable_reason("capped_simplex_project_f32")
    if why:
        return [why]
    if kind == "cuda":
        why = unavailable_reason("capped_simplex_project_cuda_f32") or cuda_unavailable_reason()
        return [why] if why else []
    return []


def _sfx(x: torch.Tensor) -> str:
    return "f64" if x.dtype == torch.float64 else "f32"


def _stream(x: torch.Tensor) -> int:
    return raw_stream(x.device)


def projection_cpu(y: torch.Tensor, C: float) -> torch.Tensor:
    """``y``: contiguous (N, M) CPU float32/float64."""
    x = torch.empty_like(y)
    getattr(_ext(), f"capped_simplex_project_{_sfx(y)}")(y.data_ptr(), x.data_ptr(), y.shape[0], y.shape[1], C)
    return x


def projection_backward_cpu(x: torch.Tensor, g: torch.Tensor, C: float) -> torch.Tensor:
    gy = torch.empty_like(g)
    fn = getattr(_ext(), f"capped_simplex_backward_{_sfx(x)}")
    fn(x.data_ptr(), g.data_ptr(), gy.data_ptr(), x.shape[0], x.shape[1], C)
    return gy


def a2d_cpu(G: torch.Tensor, C: float, max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, M, _ = G.shape
    alpha, res = G.new_empty(B, M), G.new_empty(B)
    getattr(_ext(), f"a2d_solve_{_sfx(G)}")(G.data_ptr(), alpha.data_ptr(), res.data_ptr(), B, M, C, max_iter, tol)
    return alpha, res


def projection_cuda(y: torch.Tensor, C: float) -> torch.Tensor:
    x = torch.empty_like(y)
    with torch.cuda.device(y.device):
        fn = getattr(_ext(), f"capped_simplex_project_cuda_{_sfx(y)}")
        fn(y.data_ptr(), x.data_ptr(), y.shape[0], y.shape[1], C, _stream(y))
    return x


def projection_backward_cuda(x: torch.Tensor, g: torch.Tensor, C: float) -> torch.Tensor:
    gy = torch.empty_like(g)
    with torch.cuda.device(x.device):
        fn = getattr(_ext(), f"capped_simplex_backward_cuda_{_sfx(x)}")
        fn(x.data_ptr(), g.data_ptr(), gy.data_ptr(), x.shape[0], x.shape[1], C, _stream(x))
    return gy


def a2d_cuda(G: torch.Tensor, C: float, max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, M, _ = G.shape
    alpha, res = G.new_empty(B, M), G.new_empty(B)
    with torch.cuda.device(G.device):
        fn = getattr(_ext(), f"a2d_solve_cuda_{_sfx(G)}")
        fn(G.data_ptr(), alpha.data_ptr(), res.data_ptr(), B, M, C, max_iter, tol, _stream(G))
    return alpha, res


def projection_triton(y: torch.Tensor, C: float) -> torch.Tensor:
    from sdkd.kernels.capped_simplex import projection_forward

    return projection_forward(y, C)


def projection_backward_triton(x: torch.Tensor, g: torch.Tensor, C: float) -> torch.Tensor:
    from sdkd.kernels.capped_simplex import projection_backward

    return projection_backward(x, g, C)


def a2d_triton(G: torch.Tensor, C: float, max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    from sdkd.kernels.capped_simplex import a2d_solve

    return a2d_solve(G, C, max_iter, tol)


def _needs(x: torch.Tensor | None, device_type: str) -> list[str]:
    if x is None:  # availability query without inputs
        return []
    why = []
    if x.device.type != device_type:
        why.append(f"needs a {device_type} tensor, got {x.device.type}")
    if x.dtype not in _SUPPORTED:
        why.append(f"dtype {x.dtype} not supported (float32, float64)")
    if x.dim() >= 1 and x.shape[-1] > MAX_M:
        why.append(f"M = {x.shape[-1]} > {MAX_M}")
    return why


def cpu_reasons(x: torch.Tensor | None) -> list[str]:
    return _needs(x, "cpu") + _ext_reasons("cpu")


def cuda_reasons(x: torch.Tensor | None) -> list[str]:
    why = _needs(x, "cuda") + _ext_reasons("cuda")
    if not why and x is not None:  # a GPU older than every compiled arch: fall back instead of failing at launch
        from .._ext import cuda_device_unavailable_reason

        why = [r for r in [cuda_device_unavailable_reason(x.device)] if r]
    return why


def triton_reasons(x: torch.Tensor | None, requested: str = "auto") -> list[str]:
    why = [] if x is None else _needs(x, x.device.type)
    return why + shared_triton_reasons(x, requested)
