"""Per-call host overhead of each hot op at a tiny shape, forward + backward, next to the plain-PyTorch op of the
same size: ``spectral_loss`` vs ``F.mse_loss`` (2, 1, 8, 8); ``capped_simplex_projection`` vs ``torch.softmax``
(4, 3); ``attention`` vs SDPA + LayerNorm (1, 16, 32), 2 heads. At these sizes the arithmetic is negligible: the
time is dispatch, validation, autograd bookkeeping and launches. Each op's ``extra_info`` records its median in
microseconds and its ratio to the baseline measured in the same run (``ratio_to_baseline``), plus the pick.

    pytest bench/bench_overhead.py --benchmark-only -s
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from sdkd.ops import attention, capped_simplex_projection, spectral_loss
from sdkd.ops.spectral_loss import spectral_loss_backend

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ROUNDS = int(os.environ.get("SDKD_BENCH_ROUNDS", "200"))
_MEDIANS: dict[tuple[str, str], float] = {}


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _spectral_case():
    s = torch.randn(2, 1, 8, 8, device=DEVICE, requires_grad=True)
    t = torch.randn(2, 1, 8, 8, device=DEVICE)
    return {
        "baseline": lambda: F.mse_loss(s, t).backward(),
        "sdkd": lambda: spectral_loss(s, t, 0.25, check=False).backward(),
        "pick": lambda: spectral_loss_backend(s, t, 0.25),
    }


def _capped_case():
    y = torch.randn(4, 3, device=DEVICE, requires_grad=True)
    return {
        "baseline": lambda: torch.softmax(y, -1).sum().backward(),
        "sdkd": lambda: capped_simplex_projection(y, 0.5, check=False).sum().backward(),
        "pick": lambda: "auto",
    }


def _attention_case():
    B, N, D, H = 1, 16, 32, 2
    z = torch.randn(B, N, D, device=DEVICE, requires_grad=True)
    w_qkv = torch.randn(3 * D, D, device=DEVICE, requires_grad=True)
    w_o = torch.randn(D, D, device=DEVICE, requires_grad=True)
    ln_w = torch.ones(D, device=DEVICE, requires_grad=True)
    ln_b = torch.zeros(D, device=DEVICE, requires_grad=True)

    def baseline():
        q, k, v = F.linear(z, w_qkv).view(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)
        F.layer_norm(z + F.linear(o, w_o), (D,), ln_w, ln_b).sum().backward()

    return {
        "baseline": baseline,
        "sdkd": lambda: attention(z, None, w_qkv, None, w_o, None, ln_w, ln_b, H).sum().backward(),
        "pick": lambda: "auto",
    }


CASES = {"spectral_loss": _spectral_case, "capped_simplex": _capped_case, "attention": _attention_case}


@pytest.mark.parametrize("which", ["baseline", "sdkd"])  # baseline first: its median is there for the ratio
@pytest.mark.parametrize("op", list(CASES))
def test_host_overhead(benchmark, op, which):
    case = CASES[op]()
    fn = case[which]

    def step():
        fn()
        _sync()

    step()  # warm-up (and the measured pick for `auto`)
    benchmark.group = f"overhead {op}"
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=5)
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
        torch=torch.__version__,
        backend=which,
        pick=case["pick"]() if which == "sdkd" else which,
    )
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    median = benchmark.stats.stats.median
    _MEDIANS[(op, which)] = median
    base = _MEDIANS.get((op, "baseline"))
    benchmark.extra_info.update(median_us=median * 1e6, ratio_to_baseline=median / base if base else None)
