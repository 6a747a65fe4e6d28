"""``sdkd bench``: a short speed check of every hot op on this machine, from the installed package.

For each op and a few shapes it times ``backend="auto"`` (and reports the backend it picked) against
``backend="reference"`` in the same process, so the ratio is what this machine, build and torch give; a tiny
shape shows the fixed per-call cost next to a plain torch op of the same size. Only the public API is used
(``backend=`` of each op; the pick is read from the op's dispatcher as it is made), so it measures whatever
``auto`` does: a static order or measured picks. ``pytest bench/`` in a checkout holds the fuller suites.

    sdkd bench                      # about a minute on 2 CPU cores
    sdkd bench --quick              # seconds: small shapes, few repetitions
    sdkd bench --device cuda --out gpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "sdkd-bench/1"  # the JSON's "format": files of this kind may be overwritten by --out


@dataclass
class Case:
    """One op at one shape: ``make(device)`` returns ``call(backend)``, which runs the op once (forward and,
    where training runs it, backward)."""

    op: str
    shape: str
    passes: str
    make: Callable[[Any], Callable[[str], None]]


# ----------------------------------------------------------------------------- the ops' calls
def _spectral_loss(shape: tuple[int, ...]) -> Callable:
    def make(device):
        import torch

        from sdkd.ops import spectral_loss

        g = torch.Generator(device="cpu").manual_seed(0)
        s = torch.randn(shape, generator=g).to(device).requires_grad_()
        t = torch.randn(shape, generator=g).to(device)

        def call(backend: str) -> None:
            s.grad = None
            spectral_loss(s, t, 0.25, backend=backend, check=False).backward()

        return call

    return make


def _capped_simplex(rows: int, M: int) -> Callable:
    def make(device):
        import torch

        from sdkd.ops import capped_simplex_projection

        y = (torch.randn(rows, M, generator=torch.Generator().manual_seed(0)) * 2).to(device)
        C = max(0.6, 1.0 / M)
        return lambda backend: capped_simplex_projection(y, C, backend=backend, check=False)

    return make


def _a2d(B: int, M: int) -> Callable:
    def make(device):
        import torch

        from sdkd.ops import a2d_weights

        V = torch.randn(B, M, 64, generator=torch.Generator().manual_seed(0))
        G = (V @ V.mT).to(device)
        C = max(0.6, 1.0 / M)
        return lambda backend: a2d_weights(G, C, backend=backend, check=False)

    return make


def _attention(B: int, N: int, D: int, heads: int) -> Callable:
    def make(device):
        import torch

        from sdkd.ops import attention

        g = torch.Generator().manual_seed(0)

        def leaf(*shape: int, scale: float = 1.0):
            return (torch.randn(*shape, generator=g) * scale).to(device).requires_grad_()

        z, z_h = leaf(B, N, D), leaf(B, N, D)
        w_qkv, b_qkv, w_o, b_o = leaf(3 * D, D, scale=D**-0.5), leaf(3 * D), leaf(D, D, scale=D**-0.5), leaf(D)
        ln_w, ln_b = leaf(D), leaf(D)
        grad = torch.randn(B, N, D, generator=g).to(device)
        leaves = (z, z_h, w_qkv, b_qkv, w_o, b_o, ln_w, ln_b)

        def call(backend: str) -> None:
            for x in leaves:
                x.grad = None
            attention(z, z_h, w_qkv, b_qkv, w_o, b_o, ln_w, ln_b, heads, backend=backend).backward(grad)

        return call

    return make


def cases(device: str, quick: bool) -> list[Case]:
    """The speed cases: the shapes training uses (NSE 64², WeatherBench 32×64, a 121×240 global grid)."""
    gpu = device.startswith("cuda")
    if quick:
        return [
            Case("spectral_loss", "4x10x1x32x32", "fwd+bwd", _spectral_loss((4, 10, 1, 32, 32))),
            Case("capped_simplex", "4096x4", "fwd", _capped_simplex(4096, 4)),
            Case("a2d_weights", "256x4x4", "fwd", _a2d(256, 4)),
            Case("attention", "2x64x32 h2", "fwd+bwd", _attention(2, 64, 32, 2)),
        ]
    spectral = [(16, 10, 1, 64, 64), (32, 12, 3, 32, 64), (4, 10, 1, 121, 240)]
    attention = [(8, 1024, 128, 8), (4, 4096, 64, 4)] if gpu else [(4, 256, 64, 4), (2, 1024, 64, 4)]
    return [
        *(Case("spectral_loss", "x".join(map(str, s)), "fwd+bwd", _spectral_loss(s)) for s in spectral),
        Case("capped_simplex", "65536x4", "fwd", _capped_simplex(1 << 16, 4)),
        Case("capped_simplex", "65536x16", "fwd", _capped_simplex(1 << 16, 16)),
        Case("capped_simplex", f"{1 << 20}x4", "fwd", _capped_simplex(1 << 20, 4)),
        Case("a2d_weights", "16x4x4", "fwd", _a2d(16, 4)),
        Case("a2d_weights", "4096x4x4", "fwd", _a2d(4096, 4)),
        *(Case("attention", f"{b}x{n}x{d} h{h}", "fwd+bwd", _attention(b, n, d, h)) for b, n, d, h in attention),
    ]


# tiny shapes: the per-call cost, next to a plain torch op of the same size
def _torch_baselines() -> dict[str, tuple[str, Callable[[Any], Callable[[], None]]]]:
    def mse(device):
        import torch
        import torch.nn.functional as F

        s, t = torch.randn(1, 1, 1, 8, 8, device=device, requires_grad=True), torch.randn(1, 1, 1, 8, 8, device=device)
        return lambda: F.mse_loss(s, t).backward()

    def softmax(shape):
        def make(device):
            import torch

            y = torch.randn(*shape, device=device)
            return lambda: torch.softmax(y, -1)

        return make

    def sdpa_ln(device):
        import torch
        import torch.nn.functional as F

        q = torch.randn(1, 2, 4, 4, device=device, requires_grad=True)

        def call():
            o = F.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(1, 4, 8)
            F.layer_norm(o, (8,)).sum().backward()

        return call

    return {
        "spectral_loss": ("F.mse_loss fwd+bwd", mse),
        "capped_simplex": ("torch.softmax", softmax((1, 2))),
        "a2d_weights": ("torch.softmax", softmax((1, 2, 2))),
        "attention": ("SDPA+LayerNorm fwd+bwd", sdpa_ln),
    }


def tiny_cases() -> list[Case]:
    return [
        Case("spectral_loss", "1x1x1x8x8", "fwd+bwd", _spectral_loss((1, 1, 1, 8, 8))),
        Case("capped_simplex", "1x2", "fwd", _capped_simplex(1, 2)),
        Case("a2d_weights", "1x2x2", "fwd", _a2d(1, 2)),
        Case("attention", "1x4x8 h2", "fwd+bwd", _attention(1, 4, 8, 2)),
    ]


# ----------------------------------------------------------------------------- timing
def paired_medians(
    fns: dict[str, Callable[[], Any]], sync: Callable[[], None], budget_s: float, min_reps: int = 3
) -> dict[str, float]:
    """Median wall time of each function, called in turn round after round (so a shared machine's drift hits all
    of them alike) after two warm-up calls each (compilation, FFT plans, a measured ``auto``'s one-off tuning),
    until ``budget_s`` per function is spent (at least ``min_reps`` rounds, at most 200)."""
    for fn in fns.values():
        fn(), sync()
        fn(), sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start, rounds = time.perf_counter(), 0
    while rounds < 200 and (rounds < min_reps or time.perf_counter() - start < budget_s * len(fns)):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(ts) for name, ts in times.items()}


@contextmanager
def recording_picks(op_name: str) -> Iterator[list[str]]:
    """The backends the op's dispatcher selects while the block runs (its ``auto`` pick), as ``name`` or
    ``name:path`` when a measured ``auto`` chose an internal path."""
    from sdkd.ops import registered_ops

    op = registered_ops().get(op_name)
    picks: list[str] = []
    if op is None:
        yield picks
        return
    original = op.select

    def select(*args: Any, **kwargs: Any):
        chosen = original(*args, **kwargs)
        picks.append(getattr(chosen, "label", None) or getattr(chosen, "name", str(chosen)))  # name[:internal path]
        return chosen

    op.select = select  # an instance attribute shadows the method for this block only
    try:
        yield picks
    finally:
        del op.select


def _measure(
    case: Case, device: str, sync: Callable[[], None], budget_s: float, extra: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """Times ``auto`` and ``reference`` (and ``extra``, a torch op to compare with) interleaved."""
    call = case.make(device)
    with recording_picks(case.op) as picks:
        call("auto")  # the pick (and a measured auto's tuning) happens on the first call
    fns = {"auto": lambda: call("auto"), "reference": lambda: call("reference")}
    if extra is not None:
        fns["extra"] = extra
    t = paired_medians(fns, sync, budget_s)
    auto, reference = t["auto"], t["reference"]
    return {
        "op": case.op,
        "shape": case.shape,
        "passes": case.passes,
        "auto_pick": picks[-1] if picks else "?",
        "auto_s": auto,
        "reference_s": reference,
        "speedup": reference / auto,
        **({"torch_op_s": t["extra"]} if extra is not None else {}),
    }


def run_bench(device: str = "cpu", quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time every case on ``device``; returns the JSON document (environment, ``rows``, ``overhead``)."""
    import torch

    import sdkd
    from sdkd.ops import _ext

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to torch (torch.cuda.is_available() is False)")
    sync = (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
    budget = 0.05 if quick else 0.5
    checkout = _ext.source_checkout()
    if checkout is not None:
        log(f"note: sdkd is imported from the source checkout at {checkout} (an editable install, or run inside it)")
    if _ext.extension() is None:
        log(f"note: {_ext.not_built_message()}; `auto` can only pick the reference")
    rows = []
    for case in cases(device, quick):
        rows.append(_measure(case, device, sync, budget))
        log(f"  {case.op} {case.shape}: auto ({rows[-1]['auto_pick']}) {rows[-1]['speedup']:.2f}x the reference")
    overhead = []
    baselines = _torch_baselines()
    for case in tiny_cases():
        name, make = baselines[case.op]
        overhead.append({**_measure(case, device, sync, budget, extra=make(device)), "torch_op": name})
    return {
        "format": FORMAT,
        "sdkd": sdkd.__version__,
        "imported_from": str(_ext.package_dir()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "extension": _ext.summary(),
        "quick": quick,
        "rows": rows,
        "overhead": overhead,
    }


def format_table(doc: dict[str, Any]) -> str:
    """The rows as a Markdown table, then the per-call overhead at the tiny shapes."""
    lines = [
        f"sdkd {doc['sdkd']} on {doc['device']} ({doc['threads']} threads), torch {doc['torch']}",
        "",
        "| op | shape | pass | auto picks | auto ms | reference ms | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['passes']} | {r['auto_pick']} | {r['auto_s'] * 1e3:.3f} "
            f"| {r['reference_s'] * 1e3:.3f} | {r['speedup']:.2f}x |"
        )
    lines += [
        "",
        "per-call overhead at a tiny shape (microseconds):",
        "",
        "| op | shape | pass | auto picks | auto us | reference us | torch op of that size | its us |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["overhead"]:
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['passes']} | {r['auto_pick']} | {r['auto_s'] * 1e6:.1f} "
            f"| {r['reference_s'] * 1e6:.1f} | {r['torch_op']} | {r['torch_op_s'] * 1e6:.1f} |"
        )
    return "\n".join(lines)


def check_out_path(out: Path) -> None:
    """``--out`` may replace an earlier ``sdkd bench`` JSON, never another file (checked before timing)."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as {out / 'bench.json'}")
    if out.exists():
        try:
            ours = json.loads(out.read_text()).get("format") == FORMAT
        except (ValueError, UnicodeDecodeError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(f"--out {out} exists and was not written by sdkd bench; choose another file name")


# ----------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Time every hot op on this machine: the backend `auto` picks against the reference, per op and shape, "
        "and the per-call overhead at a tiny shape. About a minute on 2 CPU cores; --quick takes seconds."
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:1 (a GPU's backends)")
    parser.add_argument("--quick", action="store_true", help="small shapes and few repetitions (seconds)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON to this file")


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_out_path(args.out)
    doc = run_bench(args.device, args.quick)
    print()
    print(format_table(doc))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(args.out)
        print(f"wrote {args.out}")
    return 0
