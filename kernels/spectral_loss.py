"""Triton kernel of the fused SpectralKD loss: one program per (H, W) slice.

Same algorithm and tables as the C++/CUDA kernels (``csrc/cpu/spectral_loss.cpp``): the low bands'
ortho DFT coefficients inside a box of rows x columns are four small ``tl.dot``s with truncated DFT
tables; the last band is the energy of the spatial residual ``z = x - x_low`` (never total - low);
the gradient ``2 V(c_last x + sum_{b<last} (c_b - c_last) P_b x)`` is written in the same pass.
Per-program band energies go to an ``(N, NB)`` float32 buffer that the host sums (deterministic); a
gradient launch, which has the gains, writes each program's share of the loss instead (``(N,)``), so
the host needs one sum and no per-band arithmetic.
fp32 math throughout (inputs may be fp32/fp16/bf16); ``tl.dot`` uses ``tf32x3`` on GPU (near-fp32
accuracy, REFERENCES.md 8.6) and exact fp32 under the interpreter.

The ``tl.dot`` operands are staged in shared memory, so a large box (e.g. 128 x 128 with a 0.75 cutoff:
256 KiB on sm_90) can need more than the device has (227 KiB on H100/H200). ``kernel_fits`` compiles the
launch's exact specialization once (``warmup``, no launch), compares ``metadata.shared`` with the
device's limit and caches the answer; the op takes the FFT path when it says no.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

MAX_SIDE = 128  # largest H or W one program holds in registers; larger slices use the FFT path


@triton.jit
def _spectral_loss_kernel(
    grad_ptr,
    energies_ptr,
    s_ptr,
    t_ptr,
    gains_ptr,
    cc_ptr,
    sc_ptr,
    cr_ptr,
    sr_ptr,
    bidx_ptr,
    H,
    W,
    Kr,
    Kc,
    scale,
    HAS_T: tl.constexpr,
    WITH_GRAD: tl.constexpr,
    BAND_MEAN: tl.constexpr,
    NB: tl.constexpr,
    BH: tl.constexpr,
    BW: tl.constexpr,
    BKR: tl.constexpr,
    BKC: tl.constexpr,
    PRECISION: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    oh = tl.arange(0, BH)
    ow = tl.arange(0, BW)
    oi = tl.arange(0, BKR)
    oj = tl.arange(0, BKC)
    m_x = (oh[:, None] < H) & (ow[None, :] < W)
    offs = n * H * W + oh[:, None] * W + ow[None, :]
    x = tl.load(s_ptr + offs, mask=m_x, other=0.0).to(tl.float32)
    if HAS_T:
        x = x - tl.load(t_ptr + offs, mask=m_x, other=0.0).to(tl.float32)

    # DFT tables: columns (Kc x W) loaded transposed as (BW, BKC); rows (Kr x H) as (BKR, BH)
    m_c = (ow[:, None] < W) & (oj[None, :] < Kc)
    c_offs = oj[None, :] * W + ow[:, None]
    ccT = tl.load(cc_ptr + c_offs, mask=m_c, other=0.0)
    scT = tl.load(sc_ptr + c_offs, mask=m_c, other=0.0)
    m_r = (oi[:, None] < Kr) & (oh[None, :] < H)
    r_offs = oi[:, None] * H + oh[None, :]
    cr = tl.load(cr_ptr + r_offs, mask=m_r, other=0.0)
    sr = tl.load(sr_ptr + r_offs, mask=m_r, other=0.0)

    # forward: X = scale (Cr - i Sr) x (Cc - i Sc)^T
    A = tl.dot(x, ccT, input_precision=PRECISION)
    B = tl.dot(x, scT, input_precision=PRECISION)
    Xr = (tl.dot(cr, A, input_precision=PRECISION) - tl.dot(sr, B, input_precision=PRECISION)) * scale
    Xi = -(tl.dot(sr, A, input_precision=PRECISION) + tl.dot(cr, B, input_precision=PRECISION)) * scale

    m_b = (oi[:, None] < Kr) & (oj[None, :] < Kc)
    band = tl.load(bidx_ptr + oi[:, None] * Kc + oj[None, :], mask=m_b, other=NB)
    colw = tl.where((oj == 0) | (2 * oj == W), 1.0, 2.0)
    p = Xr * Xr + Xi * Xi
    if not BAND_MEAN:
        p = p * colw[None, :]
    loss_part = 0.0
    for b in tl.static_range(NB - 1):
        e_b = tl.sum(tl.sum(tl.where(band == b, p, 0.0), axis=1), axis=0)
        if WITH_GRAD:
            loss_part += tl.load(gains_ptr + b) * e_b
        else:
            tl.store(energies_ptr + n * NB + b, e_b)

    # inverse of the masked low bands: x_low = scale Re((Cr + i Sr)^T (colw Y) (Cc + i Sc))
    low_bins = band < NB - 1
    Yr = tl.where(low_bins, Xr * colw[None, :], 0.0)
    Yi = tl.where(low_bins, Xi * colw[None, :], 0.0)
    crT = tl.trans(cr)
    srT = tl.trans(sr)
    cc = tl.trans(ccT)
    sc = tl.trans(scT)
    P1r = (tl.dot(crT, Yr, input_precision=PRECISION) - tl.dot(srT, Yi, input_precision=PRECISION)) * scale
    P1i = (tl.dot(srT, Yr, input_precision=PRECISION) + tl.dot(crT, Yi, input_precision=PRECISION)) * scale
    low = tl.dot(P1r, cc, input_precision=PRECISION) - tl.dot(P1i, sc, input_precision=PRECISION)

    # last band: energy of the residual (band_mean adds the kx = 0 and Nyquist columns once more)
    z = tl.where(m_x, x - low, 0.0)
    sign = tl.where(ow % 2 == 0, 1.0, -1.0)
    sign = tl.where(ow < W, sign, 0.0)
    even_w = (W % 2) == 0
    e_last = tl.sum(tl.sum(z * z, axis=1), axis=0)
    if BAND_MEAN:
        rz = tl.sum(z, axis=1)
        az = tl.where(even_w, tl.sum(z * sign[None, :], axis=1), 0.0)
        e_last = 0.5 * (e_last + tl.sum(rz * rz + az * az, axis=0) / W)

    if not WITH_GRAD:
        tl.store(energies_ptr + n * NB + NB - 1, e_last)
    else:
        g_last = tl.load(gains_ptr + NB - 1)
        tl.store(energies_ptr + n, loss_part + g_last * e_last)
        if NB > 2:  # second inverse with per-band gains c_b - c_last
            g_bin = tl.load(gains_ptr + band, mask=low_bins, other=0.0) - g_last
            g_bin = tl.where(low_bins, g_bin, 0.0)
            Zr = Yr * g_bin
            Zi = Yi * g_bin
            P2r = (tl.dot(crT, Zr, input_precision=PRECISION) - tl.dot(srT, Zi, input_precision=PRECISION)) * scale
            P2i = (tl.dot(srT, Zr, input_precision=PRECISION) + tl.dot(crT, Zi, input_precision=PRECISION)) * scale
            u = tl.dot(P2r, cc, input_precision=PRECISION) - tl.dot(P2i, sc, input_precision=PRECISION)
        else:
            u = (tl.load(gains_ptr) - g_last) * low
        y = tl.where(m_x, g_last * x + u, 0.0)
        if BAND_MEAN:
            ry = tl.sum(y, axis=1)
            ay = tl.where(even_w, tl.sum(y * sign[None, :], axis=1), 0.0)
            g = y + (ry[:, None] + sign[None, :] * ay[:, None]) / W
        else:
            g = 2.0 * y
        tl.store(grad_ptr + offs, g.to(grad_ptr.dtype.element_ty), mask=m_x)


def _block(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _launch_kwargs(H: int, W: int, Kr: int, Kc: int, nb: int, has_t: bool, with_grad: bool, band_mean: bool) -> dict:
    """Compile-time arguments of one launch (shared by the launch and the shared-memory check)."""
    BH, BW = _block(H), _block(W)
    return dict(
        HAS_T=has_t,
        WITH_GRAD=with_grad,
        BAND_MEAN=band_mean,
        NB=nb,
        BH=BH,
        BW=BW,
        BKR=_block(Kr),
        BKC=_block(Kc),
        PRECISION="ieee" if _interpret() else "tf32x3",
        num_warps=8 if BH * BW >= 8192 else 4,
    )


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


_MAX_SHARED: dict[int, int] = {}
_FITS: dict[tuple, bool] = {}


def max_shared_memory(device: torch.device) -> int:
    """Bytes of shared memory one Triton program may use on ``device`` (the limit Triton checks at load)."""
    idx = _device_index(device)
    if idx not in _MAX_SHARED:
        from triton.runtime import driver

        _MAX_SHARED[idx] = int(driver.active.utils.get_device_properties(idx)["max_shared_mem"])
    return _MAX_SHARED[idx]


def kernel_shared_memory(H: int, W: int, Kr: int, Kc: int, nb: int, dtype: torch.dtype, device: torch.device) -> int:
    """Shared memory (bytes) of the gradient launch for this problem: compiled, not launched (``warmup``).

    The launch later reuses the same compiled kernel (same arguments, same specialization). The other
    variants need no more: the energies-only launch (adaptive reference pass) runs a subset of the same
    dots on the same tiles, and ``band_mean`` only adds row sums (sm_90, 128 x 128: 128 KiB energies-only,
    256 KiB with the gradient, with or without ``band_mean``).
    """
    idx = _device_index(device)
    dev = torch.device("cuda", idx)
    x = torch.empty(1, dtype=dtype, device=dev)
    f32 = torch.empty(1, dtype=torch.float32, device=dev)
    i32 = torch.empty(1, dtype=torch.int32, device=dev)
    scale = float(1.0 / (H * W) ** 0.5)
    with torch.cuda.device(idx):
        compiled = _spectral_loss_kernel.warmup(
            x, f32, x, x, f32, f32, f32, f32, f32, i32, H, W, Kr, Kc, scale,
            grid=(1,),
            **_launch_kwargs(H, W, Kr, Kc, nb, True, True, False),
        )  # fmt: skip
    return int(compiled.metadata.shared)


def kernel_fits(H: int, W: int, Kr: int, Kc: int, nb: int, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether one program can hold this slice (``MAX_SIDE``) and, on a GPU, its compiled kernel's shared
    memory fits the device. Cached per problem and device: the compile runs once per process."""
    if H > MAX_SIDE or W > MAX_SIDE:
        return False
    if _interpret() or device.type != "cuda":
        return True  # the interpreter has no shared-memory limit
    key = (H, W, Kr, Kc, nb, dtype, _device_index(device))
    hit = _FITS.get(key)
    if hit is None:
        hit = _FITS[key] = kernel_shared_memory(H, W, Kr, Kc, nb, dtype, device) <= max_shared_memory(device)
    return hit


def spectral_loss_triton(
    s: torch.Tensor,
    t: torch.Tensor | None,
    grad: torch.Tensor | None,
    gains: torch.Tensor | None,
    tables: tuple[torch.Tensor, ...],
    nb: int,
    band_mean: bool,
) -> torch.Tensor:
    """Launch the kernel on contiguous ``(N, H, W)`` inputs.

    ``grad`` None: returns the band energies, float64 ``(nb,)`` (``t`` None: energies of ``s`` itself).
    With ``grad`` (and ``gains``, float32 ``(nb,)``): writes the gradient and returns the loss
    ``sum_b gains[b] E_b``, a float32 0-dim tensor. ``tables``: ``(cc, sc, cr, sr, bidx)`` float32/int32
    from ``sdkd.ops.spectral_loss.dft_tables``.
    """
    N, H, W = s.shape
    cc, sc, cr, sr, bidx = tables
    Kr, Kc = bidx.shape
    if grad is not None and (gains is None or gains.dtype != torch.float32):
        raise ValueError("spectral_loss_triton: a gradient launch needs float32 gains")
    partial = torch.empty((N,) if grad is not None else (N, nb), dtype=torch.float32, device=s.device)
    _spectral_loss_kernel[(N,)](
        grad if grad is not None else s,
        partial,
        s,
        t if t is not None else s,
        gains if gains is not None else partial,
        cc,
        sc,
        cr,
        sr,
        bidx,
        H,
        W,
        Kr,
        Kc,
        float(1.0 / (H * W) ** 0.5),
        **_launch_kwargs(H, W, Kr, Kc, nb, t is not None, grad is not None, band_mean),
    )
    return partial.sum() if grad is not None else partial.sum(0, dtype=torch.float64)
