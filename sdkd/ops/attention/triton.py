"""The Triton backend's glue: the ``sdkd::attention`` / ``sdkd::attention_backward`` custom ops over
``sdkd.kernels.attention`` (fake implementations for torch.compile) and their autograd."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- triton backend
# Forward: qkv = z W_qkv^T + b (cuBLAS) -> Triton flash-attention core (o, log-sum-exp) -> Triton epilogue
# (o W_o^T + b_o + z + z_h, LayerNorm; saves the pre-norm sum s, mean, rstd). Backward: Triton LayerNorm
# backward (ds and the ln/b_o column sums) -> do = ds W_o (cuBLAS) -> Triton dq, dk/dv kernels -> the qkv
# projection's GEMMs (cuBLAS). Both directions are custom ops, so torch.compile sees two opaque calls.
def _kernels():
    from sdkd.kernels import attention as kernels

    return kernels


@torch.library.custom_op("sdkd::attention", mutates_args=())
def attention_fwd_op(
    z: torch.Tensor,
    z_h: torch.Tensor | None,
    w_qkv: torch.Tensor,
    b_qkv: torch.Tensor | None,
    w_o: torch.Tensor,
    b_o: torch.Tensor | None,
    ln_weight: torch.Tensor | None,
    ln_bias: torch.Tensor | None,
    num_heads: int,
    eps: float,
    save: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton forward: ``(y, qkv, o, lse, s, mean, rstd)``; ``y`` is the op's result, the rest is saved for
    backward (``s``, ``mean``, ``rstd`` are empty unless ``save``)."""
    K = _kernels()
    B, N, D = z.shape
    M = B * N
    z = z.contiguous()
    qkv = F.linear(z, w_qkv, b_qkv).contiguous()
    o, lse = K.attention_core_forward(qkv, num_heads, 1.0 / math.sqrt(D // num_heads))
    y, s, mean, rstd = K.proj_residual_layernorm_forward(
        o.view(M, D),
        w_o.contiguous(),
        b_o,
        z.view(M, D),
        None if z_h is None else z_h.contiguous().view(M, D),
        None if ln_weight is None else ln_weight.contiguous(),
        None if ln_bias is None else ln_bias.contiguous(),
        eps,
        save,
    )
    return y.view(B, N, D), qkv, o, lse, s, mean, rstd


@attention_fwd_op.register_fake
def _attention_fwd_fake(z, z_h, w_qkv, b_qkv, w_o, b_o, ln_weight, ln_bias, num_heads, eps, save):
    B, N, D = z.shape
    M = B * N if save else 0
    f32 = dict(dtype=torch.float32, device=z.device)
    return (
        z.new_empty((B, N, D)),
        z.new_empty((B, N, 3 * D)),
        z.new_empty((B, N, D)),
        torch.empty((B, num_heads, N), **f32),
        z.new_empty((M, D) if save else (0,)),
        torch.empty((M,), **f32),
        torch.empty((M,), **f32),
    )


@torch.library.custom_op("sdkd::attention_backward", mutates_args=())
def attention_bwd_op(
    dy: torch.Tensor,
    z: torch.Tensor,
    qkv: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    s: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    w_qkv: torch.Tensor,
    w_o: torch.Tensor,
    ln_weight: torch.Tensor | None,
    num_heads: int,
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """Triton backward: ``(dz, dz_h, dw_qkv, db_qkv, dw_o, db_o, d_ln_weight, d_ln_bias)``."""
    K = _kernels()
    B, N, D = z.shape
    M = B * N
    ds, dlnw, dlnb, dbo = K.residual_layernorm_backward(
        dy.reshape(M, D), s, mean, rstd, None if ln_weight is None else ln_weight.contiguous()
    )
    o2 = o.view(M, D)
    dw_o = ds.t() @ o2
    do = (ds @ w_o).view(B, N, D)
    dqkv = K.attention_core_backward(do, qkv, o, lse, num_heads, 1.0 / math.sqrt(D // num_heads)).view(M, 3 * D)
    z2 = z.contiguous().view(M, D)
    dw_qkv = dqkv.t() @ z2
    db_qkv = dqkv.sum(0)
    dz = torch.addmm(ds, dqkv, w_qkv).view(B, N, D)
    return dz, ds.view(B, N, D), dw_qkv, db_qkv, dw_o, dbo, dlnw, dlnb


@attention_bwd_op.register_fake
def _attention_bwd_fake(dy, z, qkv, o, lse, s, mean, rstd, w_qkv, w_o, ln_weight, num_heads):
    B, N, D = z.shape
    return (
        z.new_empty((B, N, D)),
        z.new_empty((B, N, D)),
        z.new_empty((3 * D, D)),
        z.new_empty((3 * D,)),
        z.new_empty((D, D)),
        z.new_empty((D,)),
        z.new_empty((D,)),
        z.new_empty((D,)),
    )


def _attention_setup_context(ctx, inputs, output) -> None:
    z, z_h, w_qkv, b_qkv, w_o, b_o, ln_weight, ln_bias, num_heads, eps, save = inputs
    _, qkv, o, lse, s, mean, rstd = output
    ctx.num_heads = num_heads
    ctx.saved = save
    ctx.has = tuple(t is not None for t in (z_h, b_qkv, b_o, ln_weight, ln_bias))
    ctx.save_for_backward(z, w_qkv, w_o, ln_weight, qkv, o, lse, s, mean, rstd)


def _attention_backward(ctx, dy, *_aux_grads):
    if not ctx.saved:
        raise RuntimeError("attention: backward through a call made without grad (save=False)")
    z, w_qkv, w_o, ln_weight, qkv, o, lse, s, mean, rstd = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(z)
    dz, dz_h, dw_qkv, db_qkv, dw_o, db_o, dlnw, dlnb = attention_bwd_op(
        dy, z, qkv, o, lse, s, mean, rstd, w_qkv, w_o, ln_weight, ctx.num_heads
    )
    has_zh, has_bqkv, has_bo, has_lnw, has_lnb = ctx.has
    return (
        dz,
        dz_h if has_zh else None,
        dw_qkv,
        db_qkv if has_bqkv else None,
        dw_o,
        db_o if has_bo else None,
        dlnw if has_lnw else None,
        dlnb if has_lnb else None,
        None,
        None,
        None,
    )


attention_fwd_op.register_autograd(_attention_backward, setup_context=_attention_setup_context)


def attention_triton(
    z: torch.Tensor,
    z_h: torch.Tensor | None,
    w_qkv: torch.Tensor,
    b_qkv: torch.Tensor | None,
    w_o: torch.Tensor,
    b_o: torch.Tensor | None,
    ln_weight: torch.Tensor | None,
    ln_bias: torch.Tensor | None,
    num_heads: int,
    eps: float = 1e-5,
) -> torch.Tensor:
    """The op through the Triton kernels (``sdkd::attention`` custom op); same contract as the reference."""
    tensors = (z, z_h, w_qkv, b_qkv, w_o, b_o, ln_weight, ln_bias)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return attention_fwd_op(z, z_h, w_qkv, b_qkv, w_o, b_o, ln_weight, ln_bias, num_heads, float(eps), save)[0]
