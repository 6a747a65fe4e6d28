"""The attention op's definition (DESIGN.md section 2): input checks and the plain-PyTorch reference,
``LayerNorm(z_h + z + MHSA(z))`` with SDPA (the definition of correctness)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: head dims the Triton kernels take (``tl.arange`` extents are powers of two, ``tl.dot`` dims >= 16)
TRITON_HEAD_DIMS = (16, 32, 64, 128)


# ----------------------------------------------------------------------------- validation
def _check_param(name: str, p: torch.Tensor | None, shape: tuple[int, ...], z: torch.Tensor, optional: bool) -> None:
    if p is None:
        if not optional:
            raise ValueError(f"attention: {name} is required")
        return
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"attention: {name} must be a tensor or None, got {type(p).__name__}")
    if tuple(p.shape) != shape:
        raise ValueError(f"attention: {name} must have shape {shape} for d_model={z.shape[-1]}, got {tuple(p.shape)}")
    if p.device != z.device:
        raise ValueError(f"attention: {name} is on {p.device} but z is on {z.device}")
    if p.dtype != z.dtype:
        raise TypeError(f"attention: {name} has dtype {p.dtype} but z has dtype {z.dtype}")


def check_attention_inputs(
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
) -> None:
    """Raise a clear ``ValueError``/``TypeError`` when the call does not fit the op's contract."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"attention: z must be a tensor, got {type(z).__name__}")
    if z.dim() != 3:
        raise ValueError(f"attention: z must be tokens (B, N, D), got shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise TypeError(f"attention: z must be floating point, got {z.dtype}")
    B, N, D = z.shape
    if B == 0 or N == 0 or D == 0:
        raise ValueError(f"attention: z must be non-empty, got shape {tuple(z.shape)}")
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"attention: num_heads must be a positive int, got {num_heads!r}")
    if D % num_heads != 0:
        raise ValueError(f"attention: num_heads={num_heads} must divide d_model={D} (head dim = d_model / num_heads)")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise ValueError(f"attention: eps must be a positive float, got {eps!r}")
    if z_h is not None:
        if not isinstance(z_h, torch.Tensor):
            raise TypeError(f"attention: z_h must be a tensor or None, got {type(z_h).__name__}")
        if z_h.shape != z.shape:
            raise ValueError(f"attention: z_h shape {tuple(z_h.shape)} != z shape {tuple(z.shape)}")
        if z_h.device != z.device or z_h.dtype != z.dtype:
            raise ValueError(f"attention: z_h is {z_h.dtype} on {z_h.device} but z is {z.dtype} on {z.device}")
    _check_param("w_qkv", w_qkv, (3 * D, D), z, optional=False)
    _check_param("b_qkv", b_qkv, (3 * D,), z, optional=True)
    _check_param("w_o", w_o, (D, D), z, optional=False)
    _check_param("b_o", b_o, (D,), z, optional=True)
    _check_param("ln_weight", ln_weight, (D,), z, optional=True)
    _check_param("ln_bias", ln_bias, (D,), z, optional=True)


# ----------------------------------------------------------------------------- reference
def mhsa_reference(
    z: torch.Tensor,
    w_qkv: torch.Tensor,
    b_qkv: torch.Tensor | None,
    w_o: torch.Tensor,
    b_o: torch.Tensor | None,
    num_heads: int,
) -> torch.Tensor:
    """Multi-head self-attention over the N tokens of ``z`` (B, N, D), without residual or norm."""
    B, N, D = z.shape
    qkv = F.linear(z, w_qkv, b_qkv).view(B, N, 3, num_heads, D // num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
    o = F.scaled_dot_product_attention(q, k, v)
    return F.linear(o.transpose(1, 2).reshape(B, N, D), w_o, b_o)


def attention_reference(
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
    """Plain-PyTorch definition: ``LayerNorm(z_h + (z + MHSA(z)))`` over the last dim, in the input
    dtype; autograd gives the gradient. ``z_h=None`` drops the high-frequency term."""
    z_l = z + mhsa_reference(z, w_qkv, b_qkv, w_o, b_o, num_heads)
    s = z_l if z_h is None else z_h + z_l
    return F.layer_norm(s, (z.shape[-1],), ln_weight, ln_bias, eps)
