"""``sdkd info``: versions, devices and usable backends, for bug reports and sanity checks."""

from __future__ import annotations

import argparse
import importlib
import platform


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception:
        return "not installed"


def collect() -> dict:
    """Everything ``sdkd info`` prints, as a dict."""
    import torch

    import sdkd
    from sdkd.ops import _ext, available_backends
    from sdkd.ops._autotune import autotune_enabled
    from sdkd.ops._dispatch import tuned_picks
    from sdkd.ops._tuning_cache import cache_file

    ext = "built" if _ext.extension() is not None else f"not built: {_ext.not_built_message()} ({_ext.import_error()})"
    checkout = _ext.source_checkout()
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    return {
        "sdkd": sdkd.__version__,
        "imported from": f"{_ext.package_dir()}" + (" (a source checkout)" if checkout else ""),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "cuda (torch)": torch.version.cuda or "none",
        "extension sdkd._C": ext,
        "devices": devices,
        "backends": available_backends(),
        "autotune": "on" if autotune_enabled() else "off (static order)",
        "autotune picks file": str(cache_file()),
        "tuned picks": tuned_picks(),
    }


def configure(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    info = collect()
    for key, value in info.items():
        if key in ("backends", "tuned picks"):
            continue
        print(f"{key:20s} {', '.join(value) if isinstance(value, list) else value}")
    print("backends (usable, or why not):")
    for op, backends in info["backends"].items():
        for name, reasons in backends.items():
            print(f"  {op:18s} {name:10s} {'usable' if not reasons else '; '.join(reasons)}")
    picks = info["tuned picks"]
    print(f"tuned picks ({len(picks)}; measured on the first auto call of each input kind):")
    for key, entry in sorted(picks.items()):
        label = entry.get("backend", "?") + (f":{entry['path']}" if entry.get("path") else "")
        times = ", ".join(f"{k} {v:.3g} ms" for k, v in (entry.get("ms") or {}).items() if isinstance(v, (int, float)))
        print(f"  {key}\n    -> {label}  ({times})")
    return 0
