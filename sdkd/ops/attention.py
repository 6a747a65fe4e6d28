"""Attention + residual + LayerNorm epilogue (DESIGN.md section 2) and its backends.

The op is ST-AlterNet's low-frequency path on token tensors ``(B, N, D)``::

    out = LayerNorm(z_h + (z + MHSA(z)))      # parallel mode (eq. 7)
    out = LayerNorm(z + MHSA(z))              # serial mode (z_h is None)

with ``MHSA(z) = W_o . SDPA(split_heads(W_qkv z + b_qkv)) + b_o``. The signature is explicit
(tensors plus ints/floats, no modules) so that fused backends can sit in front of the plain-PyTorch
``reference`` without touching the models that call it.

Backends, in priority order: ``triton`` (CUDA tensors, fp32/fp16/bf16, head dim 16/32/64/128; the
custom ops ``sdkd::attention`` and ``sdkd::attention_backward`` over ``sdkd.kernels.attention``) and
``reference`` (SDPA + residual + ``F.layer_norm``, autograd; the fast path on CPU). CPU tensors reach
the Triton kernels only under ``TRITON_INTERPRET=1``, in float32, when ``triton`` is asked for by name
(tests). Anything else the Triton backend cannot take falls back to the reference under ``auto``.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from ._device_checks import assert_on_device
from ._dispatch import ENV_VAR, Backend, Op, register_op

__all__ = [
    "TRITON_HEAD_DIMS",
    "attention",
    "attention_op",
    "attention_reference",
    "attention_triton",
    "check_attention_inputs",
    "mhsa_reference",
]

#: head dims the Triton kernels take (``tl.arange`` extents are powers of two, ``tl.dot`` dims >= 16)
TRITON_HEAD_DIMS = (16, 32, 64, 128)
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


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


# ----------------------------------------------------------------------------- dispatch
def _reference_reasons(**_: object) -> list[str]:
    return []


def _triton_reasons(z=None, num_heads=None, interpret_ok: bool = False, **_: object) -> list[str]:
    from ._ext import triton_installed

    if not triton_installed():
        return ["triton is not installed"]
    interpreter = os.environ.get("TRITON_INTERPRET") == "1"
    if z is None:
        return [] if interpreter or torch.cuda.is_available() else ["no CUDA device"]
    why = []
    if z.device.type == "cpu":
        if not interpreter:
            why.append("needs CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)")
        elif not interpret_ok:
            why.append("CPU tensors run in the Triton interpreter only when backend='triton' is requested")
        elif z.dtype != torch.float32:
            why.append(f"the Triton interpreter takes float32 only (its 16-bit tl.dot is unreliable), got {z.dtype}")
    elif z.device.type != "cuda":
        why.append(f"needs CUDA tensors, got {z.device}")
    elif z.dtype == torch.bfloat16 and torch.cuda.get_device_capability(z.device) < (8, 0):
        why.append("bfloat16 needs compute capability >= 8.0")
    if z.dtype not in _TRITON_DTYPES:
        why.append(f"dtype {z.dtype} not supported (float32, float16, bfloat16)")
    if num_heads:
        head_dim = z.shape[-1] // num_heads
        if head_dim not in TRITON_HEAD_DIMS:
            why.append(f"head dim {head_dim} (d_model {z.shape[-1]} / {num_heads} heads) not in {TRITON_HEAD_DIMS}")
    return why


def _pick_key(z=None, num_heads=None, interpret_ok: bool = False, **_: object):
    """What the probes above read: device, dtype, width and heads, the interpreter switches."""
    if not isinstance(z, torch.Tensor):
        return None
    return z.device, z.dtype, z.shape[-1], num_heads, interpret_ok, os.environ.get("TRITON_INTERPRET")


attention_op = register_op(
    Op(
        name="attention",
        backends=[
            Backend(
                "triton", attention_triton, _triton_reasons, "Triton flash attention + fused W_o/residual/LayerNorm"
            ),
            Backend("reference", attention_reference, _reference_reasons, "F.scaled_dot_product_attention + autograd"),
        ],
        auto_key=_pick_key,
    )
)


def _check_finite(**tensors: torch.Tensor | None) -> None:
    """Assert on the device that every input is finite (no host read; on the CPU a failure names them)."""
    given = {name: t for name, t in tensors.items() if t is not None}

    def diagnose() -> None:
        bad = [name for name, t in given.items() if not bool(torch.isfinite(t).all())]
        raise ValueError(f"attention: non-finite values (nan/inf) in {', '.join(bad)}")

    ok = torch.stack([torch.isfinite(t).all() for t in given.values()])
    assert_on_device(ok, "attention: non-finite values (nan/inf) in the inputs", diagnose)


def _autocast_enabled(device_type: str) -> bool:
    """``torch.is_autocast_enabled(device_type)``, False for device types autocast does not know."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return False


def attention(
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
    backend: str = "auto",
    check: bool = False,
) -> torch.Tensor:
    """Fused ``LayerNorm(z_h + z + MHSA(z))`` on tokens ``z`` (B, N, D); returns (B, N, D).

    ``z_h``: optional high-frequency branch of the same shape (None for serial mode);
    ``w_qkv`` (3D, D) / ``b_qkv`` (3D,): packed q, k, v projection (``nn.Linear`` layout);
    ``w_o`` (D, D) / ``b_o`` (D,): output projection; ``ln_weight`` / ``ln_bias`` (D,): LayerNorm
    affine (None = identity); ``num_heads`` must divide D. Biases may be None.
    ``backend``: ``"auto"`` (first usable, ``SDKD_BACKEND`` overrides), ``"triton"`` (CUDA; CPU float32
    only under ``TRITON_INTERPRET=1`` and only when requested by name) or ``"reference"``. On CPU the
    reference is the fast path. Non-finite inputs give non-finite outputs on every backend, as in the
    reference (never finite garbage); ``check=True`` asserts on the device that they are finite (no host
    read; on the CPU a failure raises ``ValueError`` naming them, on CUDA it is a device-side assert).

    Under ``torch.autocast`` the op behaves like the GEMMs it is made of (``F.linear``, SDPA): every
    floating-point input is cast to the autocast dtype and the op runs in it (autocast off inside), so
    mixed inputs (fp32 ``z``, bf16 ``z_h``, fp32 weights) work and the result has the autocast dtype;
    softmax and LayerNorm statistics stay fp32 inside every backend. Outside autocast, inputs of
    different dtypes are an error.
    """
    device_type = z.device.type if isinstance(z, torch.Tensor) else None
    if device_type is not None and _autocast_enabled(device_type):
        dt = torch.get_autocast_dtype(device_type)
        tensors = (z, z_h, w_qkv, b_qkv, w_o, b_o, ln_weight, ln_bias)
        cast = [t.to(dt) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in tensors]
        with torch.autocast(device_type, enabled=False):
            return attention(*cast, num_heads, eps, backend=backend, check=check)
    check_attention_inputs(z, z_h, w_qkv, b_qkv, w_o, b_o, ln_weight, ln_bias, num_heads, eps)
    if check:
        _check_finite(z=z, z_h=z_h, w_qkv=w_qkv, b_qkv=b_qkv, w_o=w_o, b_o=b_o, ln_weight=ln_weight, ln_bias=ln_bias)
    requested = backend if backend != "auto" else (os.environ.get(ENV_VAR, "").strip() or "auto")
    impl = attention_op.select(
        backend,
        z=z,
        z_h=z_h,
        w_qkv=w_qkv,
        b_qkv=b_qkv,
        w_o=w_o,
        b_o=b_o,
        ln_weight=ln_weight,
        ln_bias=ln_bias,
        num_heads=num_heads,
        eps=eps,
        interpret_ok=requested == "triton",
    )
    return impl.fn(z, z_h, w_qkv, b_qkv, w_o, b_o, ln_weight, ln_bias, num_heads, float(eps))
