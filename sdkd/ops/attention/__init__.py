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

``definition``: input checks and the reference; ``triton``: the Triton backend's custom ops and autograd;
``op``: the probes, tuning, registration and the public ``attention``.
"""

from .definition import TRITON_HEAD_DIMS, attention_reference, check_attention_inputs, mhsa_reference
from .op import attention, attention_op
from .triton import attention_bwd_op, attention_fwd_op, attention_triton

__all__ = [
    "TRITON_HEAD_DIMS",
    "attention",
    "attention_bwd_op",
    "attention_fwd_op",
    "attention_op",
    "attention_reference",
    "attention_triton",
    "check_attention_inputs",
    "mhsa_reference",
]
