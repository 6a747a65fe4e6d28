"""The fused backends' plan: the DFT box holding the low bands, its tables, the per-band gains, and which internal
path (real-FFT kernel, box kernel, torch.fft maps) a backend takes for a call.

The cpu, cuda and triton backends compute the loss and its gradient in one pass (the gradient is saved in forward
and only scaled in backward, Liger-Kernel's loss pattern). Bands below the last come from a truncated DFT over a
box of rows x columns that holds the largest cutoff's disk (REFERENCES.md 8.6); the last band is the energy of
the spatial residual after removing them. With per-band gains c_b (weight / normaliser, / teacher energy when
adaptive) the loss is sum_b c_b E_b and the gradient 2 V(sum_b c_b P_b x); see csrc/cpu/spectral_loss.cpp. When
the box holds most of the spectrum the same backends take the FFT path (``fft_path``) instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from .. import _ext
from .definition import band_bin_counts, band_index

#: internal paths of the fused backends: the backend's own FFT kernel (cpu: real FFTs for power-of-two sizes;
#: cuda: radix-2 FFTs in shared memory), the truncated-DFT box kernel, and the torch.fft (cuFFT / pocketfft) path
#: with the band gains folded into per-bin maps. Measured ``auto`` times every one a backend offers.
PATHS = ("fft_kernel", "box", "torch_fft")


@dataclass(frozen=True)
class StaticOrder:
    """The hand-set choice of internal path, used when ``auto`` is not measured (``SDKD_AUTOTUNE=0``,
    deterministic mode, torch.compile tracing without a tuned pick) or a backend is asked for without a path.

    ``dft_max_fraction``: box bins / half-spectrum bins above which the box kernel is not used.
    ``cpu_box_max_cost``: cpu backend, sizes its real-FFT kernel does not take: the box kernel while
    Kc * (1 + Kr / W) (its multiply-adds per element / 4) stays below this, the torch.fft path beyond. Measured on
    2 cores (fwd+bwd over the reference, box / FFT path): 63x65 cost 12.9: 1.9x / 1.6x, 25: 1.0x / 1.4x; 96x96
    cost 12: 1.6x / 1.5x, 19.5: 1.3x / 1.5x; 181x360 cost 20: 2.6x / 1.8x, 41: 1.3x / 1.6x.
    ``cpu_fft_kernel``: the cpu backend's real-FFT kernel (csrc/cpu/spectral_loss_fft.cpp) for any H and W >= 8
    (mixed-radix / Bluestein transforms where not a power of two), any cutoff; ~5x the reference in
    bench/bench_spectral_loss.py (2 cores).
    ``gpu_box_max_slice_macs``: cuda/triton, the box kernel only while one slice costs at most this many
    multiply-adds (``box_macs``), cuFFT beyond. H200, bench/results/README.md (run 2): box kernel 4.8x / 2.7x the
    reference at 64x64 (0.57 M) / 32x64 (0.21 M), 0.39x at 128x128 (4.4 M), where the FFT path is 1.5x.
    ``cuda_fft_kernel``: the cuda backend's FFT kernel (csrc/cuda/spectral_loss_fft_kernel.cuh) for power-of-two
    H, W >= 2 whenever one block's shared memory fits; checked under the CPU emulation of CUDA
    (tests/test_cuda_emulated.py), its GPU speed not measured yet.
    """

    dft_max_fraction: float = 0.3
    cpu_box_max_cost: float = 16.0
    cpu_fft_kernel: bool = True
    gpu_box_max_slice_macs: float = 1.5e6
    cuda_fft_kernel: bool = True


#: the static order in use (a frozen value: tests swap it whole with ``dataclasses.replace``)
STATIC_ORDER = StaticOrder()
#: bands the cpu box, cuda and triton kernels handle (band energies live in registers/shared memory). The one
#: source on the Python side (the Triton kernels take the band count as an argument); csrc's
#: SDKD_SPECTRAL_MAX_BANDS (csrc/cuda/spectral_loss.h) must equal it: tests/test_dispatch_policy.py checks.
MAX_KERNEL_BANDS = 8


@dataclass(frozen=True)
class DftPlan:
    """Box of rfft2 bins that holds every band but the last: ``rows`` (ky indices) x ``kx < Kc``."""

    H: int
    W: int
    cutoffs: tuple[float, ...]
    rows: tuple[int, ...]
    Kc: int

    @property
    def Kr(self) -> int:
        return len(self.rows)

    @property
    def nb(self) -> int:
        return len(self.cutoffs) + 1

    @property
    def fraction(self) -> float:
        return self.Kr * self.Kc / (self.H * (self.W // 2 + 1))


@lru_cache(maxsize=128)
def dft_plan(H: int, W: int, cutoffs: tuple[float, ...]) -> DftPlan:
    """The smallest row/column box holding the disk ``r <= cutoffs[-1]`` (checked against ``band_index``)."""
    cmax = cutoffs[-1] * (1 + 1e-9)
    kc = min(int(math.floor(cmax * W)), W // 2)  # largest kx with kx / W <= cutoff (to band_index's tolerance)
    kr = int(math.floor(cmax * H))
    rows = tuple(range(H)) if 2 * kr + 1 >= H else tuple(range(kr + 1)) + tuple(range(H - kr, H))
    idx = band_index(H, W, cutoffs).clone()
    last = len(cutoffs)
    idx[list(rows), : kc + 1] = last
    if bool((idx != last).any()):  # pragma: no cover - guards the box arithmetic above
        raise AssertionError(f"spectral_loss: DFT box misses low-band bins for H={H}, W={W}, cutoffs={cutoffs}")
    return DftPlan(H, W, cutoffs, rows, kc + 1)


_TABLES: dict[tuple, tuple[torch.Tensor, ...]] = {}


def dft_tables(plan: DftPlan, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """``(cc, sc, cr, sr, bidx)``: cos/sin tables ``(Kc, W)`` and ``(Kr, H)`` in ``dtype``, band of each box bin
    ``(Kr, Kc)`` int32 (from ``band_index``). Cached per plan, device and dtype."""
    key = (plan, str(device), dtype)
    hit = _TABLES.get(key)
    if hit is not None:
        return hit
    H, W = plan.H, plan.W
    j = torch.arange(plan.Kc, dtype=torch.int64)
    ky = torch.tensor(plan.rows, dtype=torch.int64)
    ang_c = (2 * math.pi / W) * ((j[:, None] * torch.arange(W)[None, :]) % W).to(torch.float64)
    ang_r = (2 * math.pi / H) * ((ky[:, None] * torch.arange(H)[None, :]) % H).to(torch.float64)
    bidx = band_index(H, W, plan.cutoffs)[ky][:, : plan.Kc].to(torch.int32)
    out = tuple(
        x.to(device=device, dtype=dtype).contiguous() for x in (ang_c.cos(), ang_c.sin(), ang_r.cos(), ang_r.sin())
    ) + (bidx.to(device).contiguous(),)
    if len(_TABLES) > 256:
        _TABLES.clear()
    _TABLES[key] = out
    return out


@lru_cache(maxsize=256)
def _band_norms(H: int, W: int, cuts: tuple[float, ...], numel: int, reduction: str) -> tuple[float, ...]:
    """Divisor of each band's energy: numel ("mean") or bins x leading size ("band_mean"); 0 marks an
    empty band, whose term is exactly 0 (its residual energy is rounding noise, not signal)."""
    counts = band_bin_counts(H, W, cuts).tolist()
    n_lead = numel // (H * W)
    return tuple((float(numel) if reduction == "mean" else float(c) * n_lead) if c > 0 else 0.0 for c in counts)


@lru_cache(maxsize=256)
def _fixed_gains(weights: tuple[float, ...], norms: tuple[float, ...], device: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(
        [w / max(n, 1.0) if n > 0 else 0.0 for w, n in zip(weights, norms)], dtype=torch.float64, device=device
    ).to(dtype)


def _gains(weights, norms, ref: torch.Tensor | None, eps: float, device, dtype=torch.float64) -> torch.Tensor:
    """Per-band gains ``c_b`` (computed in float64, returned in ``dtype`` on ``device``): loss = sum_b c_b E_b
    for raw energies E_b.

    Without ``ref`` (fixed weighting) they depend on the call's constants only: cached per device and dtype,
    so a training step pays no host-to-device copy or cast for them.
    """
    if ref is None:
        return _fixed_gains(tuple(weights), tuple(norms), str(device), dtype)
    # adaptive: divide by the teacher's (detached) normalised band energy + eps; the constants are cached
    # on the device (a host-to-device copy per step would synchronise on CUDA)
    c = _fixed_gains(tuple(weights), tuple(norms), str(device), torch.float64)
    inv = _fixed_gains((1.0,) * len(norms), tuple(norms), str(device), torch.float64)
    return (c / (ref.to(torch.float64) * inv + eps)).to(dtype)


_DTYPE_CODE = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def _cuda_fft_ok(plan: DftPlan, dtype: torch.dtype, device: torch.device, band_mean: bool) -> bool:
    """Whether the static order gives this call to the cuda FFT kernel (``cuda_fft_kernel`` and it can run it)."""
    return STATIC_ORDER.cuda_fft_kernel and _cuda_fft_capable(plan, dtype, device, band_mean)


def _cuda_fft_capable(plan: DftPlan, dtype: torch.dtype, device: torch.device, band_mean: bool) -> bool:
    """Whether the cuda FFT kernel can run this call: powers of two and one block's shared memory fits."""
    return _is_pow2(plan.H) and _is_pow2(plan.W) and _cuda_fft_fits(plan, dtype, device, band_mean)


@lru_cache(maxsize=256)
def _cuda_fft_fits(plan: DftPlan, dtype: torch.dtype, device: torch.device, band_mean: bool) -> bool:
    """The block's shared memory fits the device: with x kept in it, or ("mean" only) the variant reading x again
    (e.g. 128 x 256 float32, or 128 x 128 with three bands)."""
    _C = _ext.extension()
    if plan.H < 2 or plan.W < 2 or not hasattr(_C, "spectral_loss_cuda_fft"):
        return False
    limit = _cuda_smem_limit(torch.device(device))
    need = [_C.spectral_loss_cuda_fft_smem(_DTYPE_CODE[dtype], plan.H, plan.W, plan.Kc, plan.nb, True, keep)
            for keep in ((True,) if band_mean else (True, False))]  # fmt: skip
    return min(need) <= limit


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _cpu_fft_ok(H: int, W: int) -> bool:
    """Whether the static order gives (H, W) to the cpu backend's own real-FFT kernel: any H, W >= 8 (8-lane
    vectors along rows); builds older than the mixed-radix transforms take powers of two only."""
    return STATIC_ORDER.cpu_fft_kernel and _cpu_fft_size_ok(H, W)


@lru_cache(maxsize=256)
def _cpu_fft_size_ok(H: int, W: int) -> bool:
    ext = _ext.extension()
    if W < 8 or not hasattr(ext, "spectral_loss_cpu_fft"):
        return False
    return (_is_pow2(H) and _is_pow2(W)) or bool(getattr(ext, "spectral_loss_cpu_fft_any_size", False))


@lru_cache(maxsize=128)
def band_map(plan: DftPlan) -> torch.Tensor:
    """Band of every bin with ``kx < Kc``, ``(H, Kc)`` int32 contiguous (CPU): the FFT kernel's mask."""
    return band_index(plan.H, plan.W, plan.cutoffs)[:, : plan.Kc].to(torch.int32).contiguous()


def box_macs(plan: DftPlan) -> int:
    """Multiply-adds of the box kernel per slice: forward and inverse, rows (H W Kc, two real outputs) and
    columns (Kr Kc H, complex)."""
    return 2 * (2 * plan.H * plan.W * plan.Kc + 4 * plan.Kr * plan.Kc * plan.H)


@lru_cache(maxsize=16)
def _cuda_smem_limit(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


def _kernel_fits(backend: str, plan: DftPlan, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the static order gives this plan to the box kernel (else the backend uses the FFT path)."""
    order = STATIC_ORDER
    if plan.fraction > order.dft_max_fraction:
        return False
    if backend == "cpu" and plan.Kc * (1 + plan.Kr / plan.W) > order.cpu_box_max_cost:
        return False
    if backend in ("cuda", "triton") and box_macs(plan) > order.gpu_box_max_slice_macs:
        return False  # cuFFT is cheaper than the box DFT for slices this large (see gpu_box_max_slice_macs)
    return _box_capable(backend, plan, dtype, device)


def _box_capable(backend: str, plan: DftPlan, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the backend's box kernel can run this plan at all (the GPU kernels: one block's shared memory)."""
    if backend == "triton":  # slice size and the compiled kernel's shared memory vs the device's (cached)
        from sdkd.kernels.spectral_loss import kernel_fits

        return kernel_fits(plan.H, plan.W, plan.Kr, plan.Kc, plan.nb, dtype, device)
    if backend == "cuda":
        return _cuda_box_fits(plan, dtype, device)
    return backend == "cpu"


def runnable_paths(backend: str, plan: DftPlan, dtype: torch.dtype, device: torch.device, band_mean: bool) -> list[str]:
    """The internal paths ``backend`` can take for this call, in the static order's preference."""
    paths = []
    if backend == "cpu" and _cpu_fft_size_ok(plan.H, plan.W):
        paths.append("fft_kernel")
    if backend == "cuda" and _cuda_fft_capable(plan, dtype, device, band_mean):
        paths.append("fft_kernel")
    if _box_capable(backend, plan, dtype, device):
        paths.append("box")
    paths.append("torch_fft")
    return paths


def static_path(backend: str, plan: DftPlan, dtype: torch.dtype, device: torch.device, band_mean: bool) -> str:
    """The internal path the static order (``STATIC_ORDER``) gives this call."""
    if backend == "cpu" and _cpu_fft_ok(plan.H, plan.W):
        return "fft_kernel"
    if backend == "cuda" and _cuda_fft_ok(plan, dtype, device, band_mean):
        return "fft_kernel"
    if _kernel_fits(backend, plan, dtype, device):
        return "box"
    return "torch_fft"


@lru_cache(maxsize=256)
def _cuda_box_fits(plan: DftPlan, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether one CUDA block's shared memory for this plan fits the device's (cached: asked on every call)."""
    need = _ext.extension().spectral_loss_cuda_smem(_DTYPE_CODE[dtype], plan.H, plan.W, plan.Kr, plan.Kc, plan.nb)
    return need <= _cuda_smem_limit(torch.device(device))
