"""Export a trained model for deployment: ONNX (onnxruntime) or a ``torch.export`` program (``.pt2``).

The exported graph takes ``x: (batch, T_in, C, H, W)`` float32 with a dynamic batch axis and
returns ``forecast: (batch, T_out, C, H, W)``. With ``normalization="baked"`` (default) the
dataset's z-score is part of the graph (physical units in and out, the same module
``Forecaster`` runs); with ``"beside"`` the graph works in normalised units and ``mean``/``std``
are only stored in the metadata file ``OUT.json`` written next to it. ``ExportedModel`` runs
either kind in physical units, and the export is checked against the eager model by default.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sdkd.errors import SdkdError

FORMATS = ("onnx", "torch-export")
NORMALIZATIONS = ("baked", "beside")
INPUT_NAME, OUTPUT_NAME = "x", "forecast"


class ExportError(SdkdError, RuntimeError):
    """The model could not be exported, or the exported program disagrees with the eager model."""


@dataclass
class ExportResult:
    path: Path
    meta_path: Path
    format: str
    max_abs_err: float | None  # parity with the eager model in physical units; None if not checked


def meta_path_of(path: str | Path) -> Path:
    """Where the metadata of an exported file lives: ``<path>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _need_onnx() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"ONNX export needs {' and '.join(missing)}: pip install 'sdkd[export]'")


class _Raw(nn.Module):
    """Only the model's prediction (models also accept ``return_features``); the graph input is ``x``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def export_module(
    module: nn.Module, example: torch.Tensor, path: str | Path, fmt: str, opset: int | None = None
) -> Path:
    """Export ``module(x)`` (on the CPU, eval mode) with a dynamic batch axis to ``path`` in ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.cpu().eval()
    example = example.detach().cpu().float()
    dynamic = {INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=1 << 20)}}
    captured = io.StringIO()
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision not installed"
    level = registry_log.level
    try:
        registry_log.setLevel(logging.ERROR)
        with torch.no_grad(), contextlib.redirect_stdout(captured), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside the exporters
            if fmt == "torch-export":
                program = torch.export.export(module, (example,), dynamic_shapes=dynamic)
                torch.export.save(program, str(path))
            else:
                _need_onnx()
                big = sum(p.numel() * p.element_size() for p in module.parameters()) > (1 << 31) - (1 << 27)
                torch.onnx.export(
                    module,
                    (example,),
                    str(path),
                    dynamo=True,
                    external_data=big,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=dynamic,
                    opset_version=opset,
                    verbose=False,
                )
    except (ImportError, OSError):  # a missing package or an unwritable file: not the model's fault
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (try --format torch-export)" if fmt == "onnx" else ""
        raise ExportError(
            f"could not export to {fmt}: {type(exc).__name__}: {first}. The model may use an operator the "
            f"exporter does not support{hint}."
        ) from exc
    finally:
        registry_log.setLevel(level)
    return path


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    fmt: str = "onnx",
    *,
    normalization: str = "baked",
    opset: int | None = None,
    check: bool = True,
    example_batch: int = 2,
) -> ExportResult:
    """Export the model of an sdkd checkpoint to ``out`` (and its metadata to ``out.json``).

    ``check`` runs the exported file (onnxruntime / the loaded ``torch.export`` program) on random
    physical-unit inputs of two batch sizes and raises ``ExportError`` if it disagrees with the eager
    model beyond float32 round-off or returns NaN/inf where the eager forecast is finite.
    """
    from sdkd import __version__
    from sdkd.forecast import Forecaster

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    from sdkd.outputs import check_writable_file

    check_writable_file(out, "--out")  # before loading and tracing: a read-only folder is not an operator's fault
    check_writable_file(meta_path_of(out), "the metadata file")
    f = Forecaster.from_checkpoint(checkpoint, device="cpu")
    gen = torch.Generator().manual_seed(0)

    def physical(batch: int) -> torch.Tensor:
        z = torch.randn(batch, *f.in_shape, generator=gen)
        return (z * f.module.std + f.module.mean).float()

    module = f.module if normalization == "baked" else _Raw(f.module.model)
    example = physical(example_batch)
    if normalization == "beside":
        example = (example - f.module.mean) / f.module.std
    path = export_module(module, example, out, fmt, opset=opset)
    meta = {
        "format": fmt,
        "model": f.name,
        "model_spec": f.spec,
        "in_shape": list(f.in_shape),
        "out_frames": f.out_frames,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "layout": "(batch, T, C, H, W) float32",
        "normalization": normalization,
        "mean": f.mean.tolist(),
        "std": f.std.tolist(),
        "source_checkpoint": str(checkpoint),
        "sdkd_version": __version__,
        "torch_version": torch.__version__,
    }
    meta_path = meta_path_of(path)
    meta_path.write_text(json.dumps(meta, indent=2))
    err = None
    if check:
        runner = ExportedModel(path)
        err = 0.0
        for batch in (1, example_batch + 1):
            x = physical(batch)
            expected = f.forecast(x)
            got = torch.as_tensor(runner(x.numpy()))
            if got.shape == expected.shape and not bool(torch.isfinite(got).all()):  # max() would skip a NaN error
                raise ExportError(
                    f"exported {fmt} file {path} returns {int((~torch.isfinite(got)).sum())} non-finite values "
                    f"(NaN or inf) at batch {batch} where the eager model's forecast is finite"
                )
            scale = float(expected.abs().max()) + float(f.std.max())
            err = max(err, float((got - expected).abs().max()))
            if got.shape != expected.shape or not err <= 1e-4 * scale:
                raise ExportError(
                    f"exported {fmt} file {path} disagrees with the eager model at batch {batch}: "
                    f"shape {tuple(got.shape)} vs {tuple(expected.shape)}, max abs error {err:.3g} (scale {scale:.3g})"
                )
    return ExportResult(path, meta_path, fmt, err)


class ExportedModel:
    """Run an exported file in physical units: ``y = ExportedModel(path)(x)`` with ``x: (B, T_in, C, H, W)``.

    Reads ``<path>.json`` (if present) for shapes and, when the normalisation was stored beside
    the graph, applies it around the graph. ONNX files run in onnxruntime (CPU by default), ``.pt2``
    files through ``torch.export.load``.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"exported model not found: {self.path}")
        mp = meta_path_of(self.path)
        self.meta: dict[str, Any] = json.loads(mp.read_text()) if mp.is_file() else {}
        self.format = self.meta.get("format") or ("onnx" if self.path.suffix.lower() == ".onnx" else "torch-export")
        C = len(self.meta["mean"]) if "mean" in self.meta else 1
        self._stats = None
        if self.meta.get("normalization") == "beside":
            mean = np.asarray(self.meta["mean"], dtype=np.float32).reshape(1, 1, C, 1, 1)
            std = np.asarray(self.meta["std"], dtype=np.float32).reshape(1, 1, C, 1, 1)
            self._stats = (mean, std)
        if self.format == "onnx":
            try:
                import onnxruntime as ort
            except ImportError:
                raise ImportError("running ONNX files needs onnxruntime: pip install 'sdkd[export]'") from None
            self._session = ort.InferenceSession(str(self.path), providers=providers or ["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
        else:
            self._program = torch.export.load(str(self.path)).module()

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if "in_shape" in self.meta and tuple(x.shape[1:]) != tuple(self.meta["in_shape"]):
            raise ValueError(f"x must be (batch, *{tuple(self.meta['in_shape'])}), got shape {x.shape}")
        if self._stats is not None:
            x = (x - self._stats[0]) / self._stats[1]
        if self.format == "onnx":
            y = self._session.run(None, {self._input: x})[0]
        else:
            with torch.inference_mode():
                y = self._program(torch.from_numpy(x)).numpy()
        if self._stats is not None:
            y = y * self._stats[1] + self._stats[0]
        return y
