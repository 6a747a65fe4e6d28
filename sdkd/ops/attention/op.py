"""The ``attention`` op: its backends' availability probes, measured-``auto`` tuning, registration with the
dispatcher, and the public entry point ``attention``."""

from __future__ import annotations

import torch

from .._device_checks import assert_on_device
from .._dispatch import (
    CHECK_DEFAULT,
    Backend,
    Op,
    Tuning,
    interpreter_key,
    register_op,
    requested_backend,
    triton_reasons,
)
from .definition import TRITON_HEAD_DIMS, attention_reference, check_attention_inputs
from .triton import attention_triton

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- dispatch
def _reference_reasons(**_: object) -> list[str]:
    return []


def _triton_reasons(z=None, num_heads=None, requested: str = "auto", **_: object) -> list[str]:
    why = triton_reasons(z if isinstance(z, torch.Tensor) else None, requested)
    if not isinstance(z, torch.Tensor) or why == ["triton is not installed"]:
        return why
    if z.device.type == "cpu" and not why and z.dtype != torch.float32:
        why.append(f"the Triton interpreter takes float32 only (its 16-bit tl.dot is unreliable), got {z.dtype}")
    elif z.device.type == "cuda" and z.dtype == torch.bfloat16 and torch.cuda.get_device_capability(z.device) < (8, 0):
        why.append("bfloat16 needs compute capability >= 8.0")
    if z.dtype not in _TRITON_DTYPES:
        why.append(f"dtype {z.dtype} not supported (float32, float16, bfloat16)")
    if num_heads:
        head_dim = z.shape[-1] // num_heads
        if head_dim not in TRITON_HEAD_DIMS:
            why.append(f"head dim {head_dim} (d_model {z.shape[-1]} / {num_heads} heads) not in {TRITON_HEAD_DIMS}")
    return why


def _pick_key(z=None, num_heads=None, requested: str = "auto", **_: object):
    """What the probes above read: device, dtype, width and heads, the Triton interpreter rule's inputs."""
    if not isinstance(z, torch.Tensor):
        return None
    return z.device, z.dtype, z.shape[-1], num_heads, *interpreter_key(requested)


_ARG_NAMES = ("z", "z_h", "w_qkv", "b_qkv", "w_o", "b_o", "ln_weight", "ln_bias")


def _grads(inputs: dict) -> tuple[bool, ...] | bool:
    """Which inputs autograd will differentiate (False when it will not run)."""
    flags = tuple(isinstance(inputs.get(n), torch.Tensor) and inputs[n].requires_grad for n in _ARG_NAMES)
    return torch.is_grad_enabled() and any(flags) and flags


def _tuning_key(**inputs):
    """What a timing depends on beyond ``_pick_key``: tokens, width, which optional inputs, autograd."""
    z = inputs["z"]
    present = tuple(inputs.get(n) is not None for n in _ARG_NAMES)
    return tuple(z.shape), present, _grads(inputs)


def _bench(backend: Backend, num_heads=None, eps=1e-5, **inputs):
    """One call as the caller's, on detached copies (backward into the copies when autograd will run)."""
    grads = _grads(inputs)
    args = [
        None if inputs.get(n) is None else inputs[n].detach().requires_grad_(bool(grads) and grads[i])
        for i, n in enumerate(_ARG_NAMES)
    ]

    def call() -> None:
        out = backend.fn(*args, num_heads, float(eps))
        if grads:
            out.backward(torch.ones_like(out))
            for a in args:
                if a is not None:
                    a.grad = None

    return call


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
        tuning=Tuning(key=_tuning_key, bench=_bench),
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
    check: bool = CHECK_DEFAULT,
) -> torch.Tensor:
    """Fused ``LayerNorm(z_h + z + MHSA(z))`` on tokens ``z`` (B, N, D); returns (B, N, D).

    ``z_h``: optional high-frequency branch of the same shape (None for serial mode);
    ``w_qkv`` (3D, D) / ``b_qkv`` (3D,): packed q, k, v projection (``nn.Linear`` layout);
    ``w_o`` (D, D) / ``b_o`` (D,): output projection; ``ln_weight`` / ``ln_bias`` (D,): LayerNorm
    affine (None = identity); ``num_heads`` must divide D. Biases may be None.
    ``backend``: ``"auto"`` (on GPU the faster of the usable backends, measured on the first call
    of each input kind; ``SDKD_BACKEND`` overrides), ``"triton"`` (CUDA; CPU float32
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
    requested = requested_backend(backend)
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
        requested=requested,
    )
    return impl.fn(z, z_h, w_qkv, b_qkv, w_o, b_o, ln_weight, ln_bias, num_heads, float(eps))
