"""Triton kernels of the fused attention op ``LayerNorm(z_h + z + MHSA(z))`` (DESIGN.md section 4).

Two kernels per direction, no ``N x N`` matrix in memory and no separate residual/LayerNorm passes:

* attention core (FlashAttention-2 style): the forward reads q, k, v straight from the packed
  ``qkv = z W_qkv^T + b`` buffer ``(B, N, 3, H, d)`` with an online softmax and writes ``o`` in the
  ``(B, N, H*d)`` token layout plus the per-row log-sum-exp (base 2, fp32); the backward is a
  ``delta = rowsum(do * o)`` pre-pass, one kernel for dk/dv (loop over query blocks) and one for dq
  (loop over key blocks), all writing into one ``dqkv`` buffer of the ``qkv`` layout;
* epilogue: one program per block of tokens owns all of ``d_model``: ``o W_o^T`` as a K-loop of
  ``tl.dot`` into an fp32 ``[BLOCK_M, d_model]`` accumulator, then ``+ b_o + z (+ z_h)`` and the
  LayerNorm, writing ``y`` and (for backward) the pre-norm sum ``s`` with its mean and rstd. Its
  backward is Liger's LayerNorm backward: ``ds`` plus per-program fp32 partials of d(ln_weight),
  d(ln_bias) and d(b_o) that the host sums.

The q/k/v and output projections' input gradients and weight gradients are plain GEMMs and stay in
cuBLAS (``sdkd.ops.attention`` runs them with torch). ``d_model`` above ``MAX_FUSED_DMODEL`` does not
fit one program's registers: there the epilogue and its backward run in torch (same math, fp32
statistics) while the attention core stays in Triton.

fp32 math throughout (inputs fp32/fp16/bf16); fp32 ``tl.dot`` uses ``tf32x3`` on GPU (near-fp32) and
exact fp32 under the interpreter (REFERENCES.md 8.4). No autotune (fails under the interpreter);
block sizes come from the ``_*_config`` helpers, checked by compiling for sm_90 without a GPU (shared
memory, register spills) but not tuned on hardware.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

HEAD_DIMS = (16, 32, 64, 128)  # tl.arange extents must be powers of two; tl.dot needs >= 16 on GPU
MAX_FUSED_DMODEL = 1024  # largest d_model whose [BLOCK_M, d_model] fp32 accumulator one program holds
LOG2E = 1.4426950408889634


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: exact fp32 in the interpreter, tf32x3 for fp32 on GPU."""
    if _interpret():
        return "ieee"
    return "tf32x3" if dtype == torch.float32 else "tf32"  # ignored for 16-bit operands


# ----------------------------------------------------------------------------- attention core
@triton.jit
def _attn_fwd_kernel(
    o_ptr,
    lse_ptr,
    qkv_ptr,
    stride_qkv_b,
    stride_qkv_n,
    stride_o_b,
    stride_o_n,
    N,
    H,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    d_model = H * HEAD_DIM
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_base = qkv_ptr + b * stride_qkv_b + h * HEAD_DIM
    k_base = q_base + d_model
    v_base = q_base + 2 * d_model
    mask_m = offs_m < N
    q = tl.load(q_base + offs_m[:, None] * stride_qkv_n + offs_d[None, :], mask=mask_m[:, None], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        kT = tl.load(k_base + offs_n[None, :] * stride_qkv_n + offs_d[:, None], mask=mask_n[None, :], other=0.0)
        qk = tl.dot(q, kT, input_precision=PRECISION) * qk_scale  # log2 domain
        qk = tl.where(mask_n[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None] * stride_qkv_n + offs_d[None, :], mask=mask_n[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    acc = acc / l_i[:, None]
    o_offs = b * stride_o_b + offs_m[:, None] * stride_o_n + h * HEAD_DIM + offs_d[None, :]
    tl.store(o_ptr + o_offs, acc.to(o_ptr.dtype.element_ty), mask=mask_m[:, None])
    tl.store(lse_ptr + bh * N + offs_m, m_i + tl.log2(l_i), mask=mask_m)


@triton.jit
def _attn_bwd_preprocess_kernel(
    delta_ptr,
    o_ptr,
    do_ptr,
    stride_b,
    stride_n,
    N,
    H,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """``delta[b, h, n] = sum_j do[b, n, h, j] * o[b, n, h, j]`` (fp32)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_m = offs_m < N
    offs = b * stride_b + offs_m[:, None] * stride_n + h * HEAD_DIM + offs_d[None, :]
    o = tl.load(o_ptr + offs, mask=mask_m[:, None], other=0.0).to(tl.float32)
    do = tl.load(do_ptr + offs, mask=mask_m[:, None], other=0.0).to(tl.float32)
    tl.store(delta_ptr + bh * N + offs_m, tl.sum(o * do, 1), mask=mask_m)


@triton.jit
def _attn_bwd_dkdv_kernel(
    dqkv_ptr,
    qkv_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,
    stride_qkv_b,
    stride_qkv_n,
    stride_do_b,
    stride_do_n,
    N,
    H,
    qk_scale,
    sm_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program per (key block, batch*head): dk, dv by a loop over all query blocks (transposed scores)."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    d_model = H * HEAD_DIM
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_n = offs_n < N
    q_base = qkv_ptr + b * stride_qkv_b + h * HEAD_DIM
    kv_offs = offs_n[:, None] * stride_qkv_n + offs_d[None, :]
    k = tl.load(q_base + d_model + kv_offs, mask=mask_n[:, None], other=0.0)
    v = tl.load(q_base + 2 * d_model + kv_offs, mask=mask_n[:, None], other=0.0)
    do_base = do_ptr + b * stride_do_b + h * HEAD_DIM
    row_base = bh * N

    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for start_m in range(0, N, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        mask_m = offs_m < N
        qT = tl.load(q_base + offs_m[None, :] * stride_qkv_n + offs_d[:, None], mask=mask_m[None, :], other=0.0)
        lse = tl.load(lse_ptr + row_base + offs_m, mask=mask_m, other=0.0)
        qkT = tl.dot(k, qT, input_precision=PRECISION) * qk_scale
        pT = tl.exp2(qkT - lse[None, :])
        pT = tl.where(mask_m[None, :], pT, 0.0)
        do = tl.load(do_base + offs_m[:, None] * stride_do_n + offs_d[None, :], mask=mask_m[:, None], other=0.0)
        dv += tl.dot(pT.to(do.dtype), do, input_precision=PRECISION)
        delta = tl.load(delta_ptr + row_base + offs_m, mask=mask_m, other=0.0)
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dsT = pT * (dpT - delta[None, :])
        dk += tl.dot(dsT.to(qT.dtype), tl.trans(qT), input_precision=PRECISION)
    dk = dk * sm_scale
    out_base = dqkv_ptr + b * stride_qkv_b + h * HEAD_DIM
    tl.store(out_base + d_model + kv_offs, dk.to(dqkv_ptr.dtype.element_ty), mask=mask_n[:, None])
    tl.store(out_base + 2 * d_model + kv_offs, dv.to(dqkv_ptr.dtype.element_ty), mask=mask_n[:, None])


@triton.jit
def _attn_bwd_dq_kernel(
    dqkv_ptr,
    qkv_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,
    stride_qkv_b,
    stride_qkv_n,
    stride_do_b,
    stride_do_n,
    N,
    H,
    qk_scale,
    sm_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program per (query block, batch*head): dq by a loop over all key blocks."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    d_model = H * HEAD_DIM
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_m = offs_m < N
    q_base = qkv_ptr + b * stride_qkv_b + h * HEAD_DIM
    q_offs = offs_m[:, None] * stride_qkv_n + offs_d[None, :]
    q = tl.load(q_base + q_offs, mask=mask_m[:, None], other=0.0)
    do = tl.load(
        do_ptr + b * stride_do_b + h * HEAD_DIM + offs_m[:, None] * stride_do_n + offs_d[None, :],
        mask=mask_m[:, None],
        other=0.0,
    )
    lse = tl.load(lse_ptr + bh * N + offs_m, mask=mask_m, other=0.0)
    delta = tl.load(delta_ptr + bh * N + offs_m, mask=mask_m, other=0.0)

    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        kT = tl.load(
            q_base + d_model + offs_n[None, :] * stride_qkv_n + offs_d[:, None], mask=mask_n[None, :], other=0.0
        )
        vT = tl.load(
            q_base + 2 * d_model + offs_n[None, :] * stride_qkv_n + offs_d[:, None], mask=mask_n[None, :], other=0.0
        )
        qk = tl.dot(q, kT, input_precision=PRECISION) * qk_scale
        p = tl.exp2(qk - lse[:, None])
        p = tl.where(mask_n[None, :], p, 0.0)
        dp = tl.dot(do, vT, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kT.dtype), tl.trans(kT), input_precision=PRECISION)
    dq = dq * sm_scale
    tl.store(
        dqkv_ptr + b * stride_qkv_b + h * HEAD_DIM + q_offs, dq.to(dqkv_ptr.dtype.element_ty), mask=mask_m[:, None]
    )


# Block sizes: fixed choices (no autotune, REFERENCES.md 8.4), checked by compiling for sm_90 without a GPU
# (shared memory within A100's 164 KB; register spills only where noted). Untuned on real hardware.
def _attn_config(N: int, head_dim: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """Forward ``(BLOCK_M, BLOCK_N, num_warps, num_stages)``."""
    if _interpret():
        blk = min(32, max(16, triton.next_power_of_2(N)))
        return blk, blk, 1, 1
    if dtype == torch.float32:
        return 64, 64 if head_dim <= 64 else 32, 4 if head_dim <= 64 else 8, 2
    if N <= 64:
        return 64, 64, 4 if head_dim <= 64 else 8, 2
    return 128, 64, 8, 3 if head_dim <= 64 else 2


def _attn_bwd_config(N: int, head_dim: int, dtype: torch.dtype) -> tuple[int, int, int, int, int, int]:
    """Backward ``(M1, N1, M2, N2, num_warps, num_stages)``: dk/dv programs own N1 keys and loop over
    M1-query blocks, dq programs own M2 queries and loop over N2-key blocks (Triton tutorial 06)."""
    if _interpret():
        blk = min(32, max(16, triton.next_power_of_2(N)))
        return blk, blk, blk, blk, 1, 1
    if dtype == torch.float32:
        # d=128: not M1=16 with 8 warps -- Triton 3.6's sm_90 code for the dk/dv kernel's [64, 16] x [16, 128]
        # tf32x3 dot then reads shared memory out of range (compute-sanitizer, H200: cudaErrorIllegalAddress)
        return (32, 64, 64, 32, 4, 2) if head_dim <= 64 else (32, 64, 64, 32, 8, 1)
    if N <= 64 or head_dim > 64:
        return 64, 64, 64, 64, 4 if head_dim <= 64 else 8, 2  # d=128: 32 bytes of dk/dv spill on sm_90
    return 32, 128, 128, 32, 8, 3


def attention_core_forward(qkv: torch.Tensor, num_heads: int, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of the packed ``qkv`` (B, N, 3*D), D = heads * head_dim, contiguous.

    Returns ``o`` (B, N, D) in ``qkv``'s dtype (heads side by side, the layout ``W_o`` consumes) and the
    base-2 log-sum-exp of the scaled scores ``lse`` (B, heads, N), fp32, for the backward.
    """
    B, N, D3 = qkv.shape
    D = D3 // 3
    d = D // num_heads
    o = torch.empty((B, N, D), dtype=qkv.dtype, device=qkv.device)
    lse = torch.empty((B, num_heads, N), dtype=torch.float32, device=qkv.device)
    BLOCK_M, BLOCK_N, warps, stages = _attn_config(N, d, qkv.dtype)
    grid = (triton.cdiv(N, BLOCK_M), B * num_heads)
    _attn_fwd_kernel[grid](
        o,
        lse,
        qkv,
        qkv.stride(0),
        qkv.stride(1),
        o.stride(0),
        o.stride(1),
        N,
        num_heads,
        sm_scale * LOG2E,
        HEAD_DIM=d,
        BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N,
        PRECISION=_precision(qkv.dtype),
        num_warps=warps,
        num_stages=stages,
    )
    return o, lse


def attention_core_backward(
    do: torch.Tensor, qkv: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, num_heads: int, sm_scale: float
) -> torch.Tensor:
    """Gradient of ``attention_core_forward`` w.r.t. ``qkv``: ``dqkv`` (B, N, 3*D) in ``qkv``'s dtype."""
    B, N, D3 = qkv.shape
    D = D3 // 3
    d = D // num_heads
    do = do.contiguous()
    delta = torch.empty_like(lse)
    dqkv = torch.empty_like(qkv)
    M1, N1, M2, N2, warps, stages = _attn_bwd_config(N, d, qkv.dtype)
    prec = _precision(qkv.dtype)
    _attn_bwd_preprocess_kernel[(triton.cdiv(N, M2), B * num_heads)](
        delta, o, do, o.stride(0), o.stride(1), N, num_heads, HEAD_DIM=d, BLOCK_M=M2
    )
    common = (qkv.stride(0), qkv.stride(1), do.stride(0), do.stride(1), N, num_heads, sm_scale * LOG2E, sm_scale)
    _attn_bwd_dkdv_kernel[(triton.cdiv(N, N1), B * num_heads)](
        dqkv,
        qkv,
        do,
        lse,
        delta,
        *common,
        HEAD_DIM=d,
        BLOCK_M=M1,
        BLOCK_N=N1,
        PRECISION=prec,
        num_warps=warps,
        num_stages=stages,
    )
    _attn_bwd_dq_kernel[(triton.cdiv(N, M2), B * num_heads)](
        dqkv,
        qkv,
        do,
        lse,
        delta,
        *common,
        HEAD_DIM=d,
        BLOCK_M=M2,
        BLOCK_N=N2,
        PRECISION=prec,
        num_warps=warps,
        num_stages=stages,
    )
    return dqkv


# ----------------------------------------------------------------------------- epilogue
@triton.jit
def _proj_residual_ln_fwd_kernel(
    y_ptr,
    s_ptr,
    mean_ptr,
    rstd_ptr,
    o_ptr,
    wo_ptr,
    bo_ptr,
    z_ptr,
    zh_ptr,
    lnw_ptr,
    lnb_ptr,
    M,
    D,
    eps,
    HAS_BO: tl.constexpr,
    HAS_ZH: tl.constexpr,
    HAS_LNW: tl.constexpr,
    HAS_LNB: tl.constexpr,
    SAVE_S: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Rows ``[pid*BLOCK_M, +BLOCK_M)`` of ``y = LN(o W_o^T + b_o + z + z_h)``; all tensors (M, D) contiguous."""
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    mask_r = rows < M
    mask_c = cols < D
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        mask_k = ks < D
        a = tl.load(o_ptr + rows[:, None] * D + ks[None, :], mask=mask_r[:, None] & mask_k[None, :], other=0.0)
        wT = tl.load(wo_ptr + cols[None, :] * D + ks[:, None], mask=mask_k[:, None] & mask_c[None, :], other=0.0)
        acc += tl.dot(a, wT, input_precision=PRECISION)
    mask = mask_r[:, None] & mask_c[None, :]
    offs = rows[:, None] * D + cols[None, :]
    s = acc + tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BO:
        s += tl.load(bo_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    if HAS_ZH:
        s += tl.load(zh_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.where(mask_c[None, :], s, 0.0)
    mean = tl.sum(s, 1) / D
    xc = tl.where(mask_c[None, :], s - mean[:, None], 0.0)
    var = tl.sum(xc * xc, 1) / D
    rstd = 1.0 / tl.sqrt(var + eps)
    y = xc * rstd[:, None]
    if HAS_LNW:
        y = y * tl.load(lnw_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    if HAS_LNB:
        y = y + tl.load(lnb_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
    if SAVE_S:
        tl.store(s_ptr + offs, s.to(s_ptr.dtype.element_ty), mask=mask)
        tl.store(mean_ptr + rows, mean, mask=mask_r)
        tl.store(rstd_ptr + rows, rstd, mask=mask_r)


@triton.jit
def _residual_ln_bwd_kernel(
    ds_ptr,
    dlnw_part_ptr,
    dlnb_part_ptr,
    dbo_part_ptr,
    dy_ptr,
    s_ptr,
    mean_ptr,
    rstd_ptr,
    lnw_ptr,
    M,
    D,
    HAS_LNW: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """LayerNorm backward, Liger style: program ``pid`` takes row blocks ``pid, pid + P, ...`` and writes
    ``ds`` plus one row of fp32 partial column sums of ``dy * xhat`` (ln weight), ``dy`` (ln bias) and
    ``ds`` (b_o); the host sums the P rows."""
    pid = tl.program_id(0)
    n_prog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_D)
    mask_c = cols < D
    if HAS_LNW:
        lnw = tl.load(lnw_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)
    acc_w = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_o = tl.zeros([BLOCK_D], dtype=tl.float32)
    for blk in range(pid, tl.cdiv(M, BLOCK_M), n_prog):
        rows = (blk * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        mask_r = rows < M
        mask = mask_r[:, None] & mask_c[None, :]
        offs = rows[:, None] * D + cols[None, :]
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        s = tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + rows, mask=mask_r, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=mask_r, other=0.0)
        xhat = tl.where(mask, (s - mean[:, None]) * rstd[:, None], 0.0)
        if HAS_LNW:
            g = dy * lnw[None, :]
        else:
            g = dy
        c1 = tl.sum(xhat * g, 1) / D
        c2 = tl.sum(g, 1) / D
        ds = tl.where(mask, (g - xhat * c1[:, None] - c2[:, None]) * rstd[:, None], 0.0)
        tl.store(ds_ptr + offs, ds.to(ds_ptr.dtype.element_ty), mask=mask)
        acc_w += tl.sum(dy * xhat, 0)
        acc_b += tl.sum(dy, 0)
        acc_o += tl.sum(ds, 0)
    tl.store(dlnw_part_ptr + pid * D + cols, acc_w, mask=mask_c)
    tl.store(dlnb_part_ptr + pid * D + cols, acc_b, mask=mask_c)
    tl.store(dbo_part_ptr + pid * D + cols, acc_o, mask=mask_c)


def _epilogue_config(M: int, D: int, device: torch.device) -> tuple[int, int, int, int]:
    """Epilogue ``(BLOCK_M, BLOCK_D, BLOCK_K, num_warps)``: ``[BLOCK_M, d_model]`` fp32 accumulators
    (d_model 1024 spills 144 bytes on sm_90), and smaller row blocks while that leaves fewer than two
    programs per SM (ST-AlterNet's B*N is small)."""
    BLOCK_D = max(16, triton.next_power_of_2(D))
    if _interpret():
        return 16, BLOCK_D, min(32, BLOCK_D), 1
    BLOCK_M = 64 if BLOCK_D <= 64 else 32 if BLOCK_D <= 128 else 16
    sms = _sm_count(device)
    while BLOCK_M > 16 and triton.cdiv(M, BLOCK_M) < 2 * sms:
        BLOCK_M //= 2
    BLOCK_K = 16 if BLOCK_D >= 1024 else 32
    return BLOCK_M, BLOCK_D, BLOCK_K, 4 if BLOCK_D <= 256 else 8


def _ln_bwd_config(D: int) -> tuple[int, int, int]:
    """LayerNorm-backward ``(BLOCK_M, BLOCK_D, num_warps)``: about 4K elements per loaded tile."""
    BLOCK_D = max(16, triton.next_power_of_2(D))
    if _interpret():
        return 16, BLOCK_D, 1
    return max(1, min(16, 4096 // BLOCK_D)), BLOCK_D, 4 if BLOCK_D <= 256 else 8


_SMS: dict[int, int] = {}


def _sm_count(device: torch.device) -> int:
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SMS:
        _SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SMS[idx]


def proj_residual_layernorm_forward(
    o: torch.Tensor,
    w_o: torch.Tensor,
    b_o: torch.Tensor | None,
    z: torch.Tensor,
    z_h: torch.Tensor | None,
    ln_weight: torch.Tensor | None,
    ln_bias: torch.Tensor | None,
    eps: float,
    save: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y = LayerNorm(o W_o^T + b_o + z (+ z_h))`` on (M, D) rows; returns ``(y, s, mean, rstd)``.

    ``s`` is the pre-norm sum in the input dtype, ``mean``/``rstd`` fp32 (M,); all three are empty
    unless ``save``. Inputs contiguous. ``D > MAX_FUSED_DMODEL`` runs the same math in torch.
    """
    M, D = o.shape
    if D > MAX_FUSED_DMODEL:
        s32 = F.linear(o, w_o, b_o).float() + z.float()
        if z_h is not None:
            s32 = s32 + z_h.float()
        var, mean = torch.var_mean(s32, dim=1, correction=0)
        rstd = torch.rsqrt(var + eps)
        y = (s32 - mean[:, None]) * rstd[:, None]
        if ln_weight is not None:
            y = y * ln_weight.float()
        if ln_bias is not None:
            y = y + ln_bias.float()
        if not save:
            return y.to(o.dtype), o.new_empty(0), mean.new_empty(0), mean.new_empty(0)
        return y.to(o.dtype), s32.to(o.dtype), mean, rstd
    y = torch.empty_like(o)
    s = torch.empty_like(o) if save else o.new_empty(0)
    mean = torch.empty(M if save else 0, dtype=torch.float32, device=o.device)
    rstd = torch.empty_like(mean)
    BLOCK_M, BLOCK_D, BLOCK_K, warps = _epilogue_config(M, D, o.device)
    _proj_residual_ln_fwd_kernel[(triton.cdiv(M, BLOCK_M),)](
        y,
        s,
        mean,
        rstd,
        o,
        w_o,
        b_o if b_o is not None else o,
        z,
        z_h if z_h is not None else z,
        ln_weight if ln_weight is not None else o,
        ln_bias if ln_bias is not None else o,
        M,
        D,
        float(eps),
        HAS_BO=b_o is not None,
        HAS_ZH=z_h is not None,
        HAS_LNW=ln_weight is not None,
        HAS_LNB=ln_bias is not None,
        SAVE_S=save,
        BLOCK_M=BLOCK_M,
        BLOCK_D=BLOCK_D,
        BLOCK_K=BLOCK_K,
        PRECISION=_precision(o.dtype),
        num_warps=warps,
        num_stages=2,
    )
    return y, s, mean, rstd


def residual_layernorm_backward(
    dy: torch.Tensor, s: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, ln_weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """LayerNorm backward on (M, D) rows: ``(ds, d_ln_weight, d_ln_bias, d_b_o)``; ``ds`` in the input
    dtype is the gradient of the pre-norm sum (so of ``z``, ``z_h`` and the projection output), the
    column sums are fp32 then cast to the input dtype."""
    M, D = dy.shape
    dy = dy.contiguous()
    if D > MAX_FUSED_DMODEL:
        xhat = (s.float() - mean[:, None]) * rstd[:, None]
        g = dy.float() * ln_weight.float() if ln_weight is not None else dy.float()
        ds = (g - xhat * (xhat * g).mean(1, keepdim=True) - g.mean(1, keepdim=True)) * rstd[:, None]
        sums = ((dy.float() * xhat).sum(0), dy.float().sum(0), ds.sum(0))
        return (ds.to(dy.dtype), *(t.to(dy.dtype) for t in sums))
    BLOCK_M, BLOCK_D, warps = _ln_bwd_config(D)
    programs = min(triton.cdiv(M, BLOCK_M), 4 if _interpret() else 2 * _sm_count(dy.device))
    ds = torch.empty_like(dy)
    parts = torch.empty((3, programs, D), dtype=torch.float32, device=dy.device)
    _residual_ln_bwd_kernel[(programs,)](
        ds,
        parts[0],
        parts[1],
        parts[2],
        dy,
        s,
        mean,
        rstd,
        ln_weight if ln_weight is not None else dy,
        M,
        D,
        HAS_LNW=ln_weight is not None,
        BLOCK_M=BLOCK_M,
        BLOCK_D=BLOCK_D,
        num_warps=warps,
    )
    dlnw, dlnb, dbo = (parts[i].sum(0).to(dy.dtype) for i in range(3))  # three separate tensors (no aliasing)
    return ds, dlnw, dlnb, dbo


def default_scale(head_dim: int) -> float:
    """Softmax scale of ``F.scaled_dot_product_attention``: ``1 / sqrt(head_dim)``."""
    return 1.0 / math.sqrt(head_dim)
