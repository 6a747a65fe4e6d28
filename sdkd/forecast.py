"""Stage 4: forecasting with a trained model — ``Forecaster``, ``sdkd predict`` and ``sdkd export``.

A checkpoint written by ``sdkd train``/``sdkd distill`` holds the weights, the model spec
(name, ``in_shape = (T_in, C, H, W)``, ``out_frames``, config) and the training split's
z-score statistics. ``Forecaster`` puts them together so that users pass inputs in physical
units and get forecasts in physical units, without the dataset or the config files.
Loading goes through ``torch.load(weights_only=True)``: it never runs code from the file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

OUTPUT_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", ".nc")


class NormalizedModel(nn.Module):
    """A model wrapped with its dataset's z-score, so that it maps physical units to physical units.

    ``forecast = model((x - mean) / std) * std + mean`` with one ``mean``/``std`` per channel of
    ``x: (B, T_in, C, H, W)``. ``Forecaster`` runs exactly this module and ``sdkd export`` bakes it
    into the exported graph, so eager and exported forecasts agree by construction.
    """

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, 1, -1, 1, 1).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, 1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std) * self.std + self.mean


def _channel_stats(value: Any, channels: int, name: str, where: str) -> torch.Tensor:
    """``value`` (scalar or ``(C,)``) as a finite float64 tensor of shape ``(C,)``."""
    try:
        t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{where}: normalization {name} must be numbers, got {type(value).__name__}: {exc}") from None
    if t.numel() == 1:
        t = t.expand(channels).clone()
    if t.numel() != channels:
        raise ValueError(f"{where}: normalization {name} has {t.numel()} values; expected 1 or C = {channels}")
    if not torch.isfinite(t).all() or (name == "std" and (t <= 0).any()):
        raise ValueError(f"{where}: normalization {name} must be finite{' and > 0' if name == 'std' else ''}, got {t}")
    return t


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={str(device)!r} was asked for, but CUDA is not available on this machine")
    return dev


class Forecaster:
    """Physical-unit forecasts from a trained sdkd model.

    ``forecast(x)`` takes ``x: (T_in, C, H, W)`` or ``(B, T_in, C, H, W)`` (numpy array or
    tensor, physical units) and returns ``(T_out, C, H, W)`` or ``(B, T_out, C, H, W)`` of the
    same kind (numpy in, numpy out; a tensor comes back on the input's device), running in
    chunks of ``batch_size`` under ``torch.inference_mode`` on ``device``. Inputs must be finite, and so must
    the forecast: inputs far outside the training data's range (e.g. around 1e20 for data of order 1) overflow
    float32 inside the model, which raises a ``ValueError`` naming the cause instead of returning NaN.

    >>> f = Forecaster.from_checkpoint("runs/nse/unet/best.pt")
    >>> y = f.forecast(x)          # x: (10, 1, 64, 64) vorticity -> y: (10, 1, 64, 64)
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Any,
        std: Any,
        in_shape: Sequence[int],
        out_frames: int,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        name: str | None = None,
        spec: Mapping[str, Any] | None = None,
    ):
        if len(in_shape) != 4 or any(int(v) <= 0 for v in in_shape):
            raise ValueError(f"in_shape must be (T_in, C, H, W) of positive ints, got {tuple(in_shape)}")
        if int(out_frames) <= 0:
            raise ValueError(f"out_frames must be a positive int, got {out_frames}")
        self.in_shape = tuple(int(v) for v in in_shape)
        self.out_frames = int(out_frames)
        C = self.in_shape[1]
        self.mean = _channel_stats(mean, C, "mean", "Forecaster")
        self.std = _channel_stats(std, C, "std", "Forecaster")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.name = name or type(model).__name__
        self.spec = dict(spec) if spec is not None else None
        self.device = _resolve_device(device)
        self.module = NormalizedModel(model, self.mean, self.std).to(self.device).eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device | None = None, batch_size: int = 64
    ) -> Forecaster:
        """Load a checkpoint of ``sdkd train``/``sdkd distill`` (weights-only: never runs code from the file)."""
        from sdkd.train.checkpoint import CheckpointError
        from sdkd.train.run import load_model

        model, ck = load_model(path, "cpu")
        spec = ck["model_spec"]
        norm = ck.get("normalization")
        if not isinstance(norm, Mapping) or "mean" not in norm or "std" not in norm:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has no normalization {{'mean', 'std'}}; "
                "it was not written by sdkd train/distill, so physical units are unknown"
            )
        try:
            return cls(
                model,
                norm["mean"],
                norm["std"],
                spec["in_shape"],
                spec["out_frames"],
                device=device,
                batch_size=batch_size,
                name=spec.get("name"),
                spec=spec,
            )
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {str(path)!r}: {exc}") from None

    # ------------------------------------------------------------------ checks
    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """Shape of one forecast: ``(T_out, C, H, W)``."""
        return (self.out_frames, *self.in_shape[1:])

    def check_shape(self, shape: Sequence[int], what: str = "x") -> bool:
        """Validate an input shape; returns ``True`` when it is a single window ``(T_in, C, H, W)``."""
        T, C, H, W = self.in_shape
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (4, 5):
            raise ValueError(
                f"{what} must be one window (T_in, C, H, W) = {self.in_shape} or a batch (B, {T}, {C}, {H}, {W}); "
                f"got shape {shape}"
            )
        t, c, h, w = shape[-4:]
        if t != T:
            raise ValueError(f"{what} has {t} input frames (axis -4) but {self.name} expects T_in = {T}")
        if c != C:
            raise ValueError(f"{what} has {c} channels (axis -3) but {self.name} expects C = {C}")
        if (h, w) != (H, W):
            raise ValueError(f"{what} has a {h}x{w} grid (axes -2, -1) but {self.name} expects H x W = {H}x{W}")
        return len(shape) == 4

    @staticmethod
    def check_finite(x: np.ndarray | torch.Tensor, what: str = "x", offset: int = 0) -> None:
        """Raise naming the first sample (along axis 0 of a batch) that holds NaN or inf."""
        bad = ~torch.isfinite(x) if isinstance(x, torch.Tensor) else torch.from_numpy(~np.isfinite(np.asarray(x)))
        if bad.any():
            n = int(bad.sum())
            where = ""
            if bad.dim() == 5:
                where = f" (first in sample {int(bad.reshape(bad.shape[0], -1).any(1).nonzero()[0, 0]) + offset})"
            raise ValueError(f"{what} contains {n} non-finite values (NaN or inf){where}; inputs must be finite")

    def check_forecast(self, y: torch.Tensor, x: np.ndarray | torch.Tensor, what: str = "the forecast") -> None:
        """Raise if the forecast ``y`` of the (finite, already checked) inputs ``x`` holds NaN or inf, naming the
        likely cause: inputs far outside the training data's range overflow float32 inside the model."""
        bad = ~torch.isfinite(y)
        if not bool(bad.any()):
            return
        xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        biggest = float(xt.detach().abs().max()) if xt.numel() else float("nan")
        ranges = ", ".join(f"{m:.4g} +- {s:.3g}" for m, s in zip(self.mean.tolist(), self.std.tolist()))
        raise ValueError(
            f"{what} of {self.name} has {int(bad.sum())} non-finite values (NaN or inf) although its inputs are "
            f"finite: max |input| is {biggest:.3g}, the training data was {ranges} (mean +- std per channel), so "
            "the model overflows float32; check the inputs' units and scale"
        )

    # ------------------------------------------------------------------ forecasting
    def forecast(
        self, x: np.ndarray | torch.Tensor, *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray | torch.Tensor:
        """Physical-unit forecast of ``x`` (see the class docstring for shapes and types)."""
        is_tensor = isinstance(x, torch.Tensor)
        if not is_tensor:
            x = np.asarray(x)
        floating = x.dtype.is_floating_point if is_tensor else x.dtype.kind == "f"
        integral = (not x.dtype.is_complex and x.dtype != torch.bool) if is_tensor else x.dtype.kind in "iu"
        if not (floating or integral):
            raise TypeError(f"x must hold real numbers, got dtype {x.dtype}")
        single = self.check_shape(x.shape)
        batch = x[None] if single else x
        self.check_finite(batch)
        out_dtype = x.dtype if floating else None
        chunks = list(self._run(batch, _positive_int(batch_size or self.batch_size, "batch_size"), progress))
        y = torch.cat(chunks) if chunks else torch.empty(0, *self.out_shape, device=self.device)
        self.check_forecast(y, batch)
        y = y[0] if single else y
        if is_tensor:
            return y.to(x.device, out_dtype or torch.float32)
        return y.cpu().numpy().astype(out_dtype or np.float32, copy=False)

    __call__ = forecast

    def _run(self, batch: Any, batch_size: int, progress: bool) -> Iterator[torch.Tensor]:
        n = len(batch)
        bar = _progress(n, progress, f"forecast {self.name}")
        try:
            for a in range(0, n, batch_size):
                yield self.forecast_chunk(batch[a : a + batch_size])
                if bar is not None:
                    bar.update(min(batch_size, n - a))
        finally:
            if bar is not None:
                bar.close()

    def forecast_chunk(self, chunk: np.ndarray | torch.Tensor) -> torch.Tensor:
        """One already-validated batch ``(b, T_in, C, H, W)`` (physical units) through the normalised model,
        without checks or chunking; float32 on the model's device."""
        if not isinstance(chunk, torch.Tensor):
            arr = np.asarray(chunk)
            chunk = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # e.g. read-only memory maps
        with torch.inference_mode():
            return self.module(chunk.to(self.device, torch.float32)).float()

    def to(self, device: str | torch.device) -> Forecaster:
        self.device = _resolve_device(device)
        self.module.to(self.device)
        return self

    def __repr__(self) -> str:
        return (
            f"Forecaster({self.name}, in_shape={self.in_shape}, out_frames={self.out_frames}, "
            f"device={self.device}, batch_size={self.batch_size})"
        )


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="window")


# ============================================================================ files
class _Windows:
    """The input file seen as windows ``(N, T_in, C, H, W)``, read lazily chunk by chunk.

    Layouts: ``(N, T_in, C, H, W)`` (windows), ``(time, C, H, W)`` or ``(time, H, W)`` for one
    channel (a series: one window if ``time == T_in``, else sliding windows ``stride`` frames apart,
    or only the last ``T_in`` frames with ``last=True``, a single window).
    """

    def __init__(self, source: Any, forecaster: Forecaster, stride: int, last: bool, where: str):
        T, C = forecaster.in_shape[:2]
        shape, ndim = source.shape, len(source.shape)
        self.source, self.add_channel = source, ndim == 3
        if ndim == 3:
            if C != 1:
                raise ValueError(f"{where}: a (time, H, W) array has 1 channel but {forecaster.name} expects C = {C}")
            shape = (shape[0], 1, *shape[1:])
        if ndim == 5:
            forecaster.check_shape(shape, where)
            self.series, self.single, self.starts = False, False, np.arange(shape[0])
        elif ndim in (3, 4):
            forecaster.check_shape((T, *shape[1:]), where)  # channels and grid
            time = shape[0]
            if time < T:
                raise ValueError(f"{where}: the series has {time} frames but {forecaster.name} needs T_in = {T}")
            self.series, self.single = True, time == T or last  # --last: one window, written (T_out, C, H, W)
            self.starts = np.array([time - T]) if last else np.arange(0, time - T + 1, stride)
        else:
            raise ValueError(
                f"{where}: expected (N, T_in, C, H, W) windows, a (time, C, H, W) series or (time, H, W); "
                f"got an array of shape {tuple(shape)}"
            )
        self.T = T

    def __len__(self) -> int:
        return len(self.starts)

    def read(self, a: int, b: int) -> np.ndarray:
        """Windows ``a:b`` as a float32 array ``(b - a, T_in, C, H, W)``."""
        if not self.series:
            x = np.array(self.source.read(a, b), dtype=np.float32)  # a copy: .npy sources are read-only maps
        else:
            starts = self.starts[a:b]
            rows = np.asarray(self.source.read(int(starts[0]), int(starts[-1]) + self.T), dtype=np.float32)
            if self.add_channel:
                rows = rows[:, None]
            x = np.stack([rows[s - starts[0] : s - starts[0] + self.T] for s in starts])
        return x


def _check_output_path(out: str | Path) -> Path:
    out = Path(out).expanduser()
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"--out: unsupported output type {out.suffix!r} for {out}; expected one of {OUTPUT_SUFFIXES}")
    from sdkd.outputs import check_writable_file

    return check_writable_file(out, "--out")  # a folder or a read-only place fails now, not after forecasting


def write_forecast(out: str | Path, forecast: np.ndarray, starts: np.ndarray | None, attrs: Mapping[str, Any]) -> Path:
    """Write ``forecast`` to ``.npy`` (array only), ``.npz``/``.h5`` (``forecast``, ``window_start``,
    metadata) or ``.nc`` (xarray variable ``forecast`` with named dimensions)."""
    out = _check_output_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    extra = {"window_start": np.asarray(starts, dtype=np.int64)} if starts is not None else {}
    if suffix == ".npy":
        np.save(out, forecast)
    elif suffix == ".npz":
        np.savez(out, forecast=forecast, **extra, metadata=np.asarray(json.dumps(dict(attrs))))
    elif suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(out, "w") as f:
            d = f.create_dataset("forecast", data=forecast)
            for k, v in attrs.items():
                d.attrs[k] = json.dumps(v) if isinstance(v, (list, dict)) else v
            for k, v in extra.items():
                f.create_dataset(k, data=v)
    else:
        import xarray as xr

        from sdkd.data._io import netcdf_engine

        dims = ("lead", "channel", "y", "x") if forecast.ndim == 4 else ("window", "lead", "channel", "y", "x")
        coords = {"window_start": ("window", extra["window_start"])} if extra and forecast.ndim == 5 else {}
        ds = xr.Dataset({"forecast": (dims, forecast)}, coords=coords)
        ds.attrs.update({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in attrs.items()})
        ds.to_netcdf(out, engine=netcdf_engine())
    return out


def evenly_spaced_leads(frames: int, max_frames: int) -> list[int]:
    """Indices of at most ``max_frames`` frames out of ``frames``, evenly spaced and ending with the last
    one: 10 leads, 6 shown -> +2, +4, +6, +8, +10 (equal steps, unlike rounding a linspace)."""
    step = -(-frames // max(1, max_frames))
    return list(range(frames - 1, -1, -step))[::-1]


def write_forecast_figure(
    x: np.ndarray, y: np.ndarray, path: str | Path, title: str = "", max_frames: int = 6, max_channels: int = 3
) -> Path:
    """PNG of one forecast: per channel, input frames above forecast frames at evenly spaced lead times
    (each row evenly spaced and ending at its last frame), one colour scale and colorbar per channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    C = min(x.shape[1], max_channels)
    T_in, T_out = x.shape[0], y.shape[0]
    leads = evenly_spaced_leads(T_out, max_frames)
    cols = len(leads)
    in_step = max(1, (T_in - 1) // (cols - 1)) if cols > 1 else 1  # as many input frames as columns, evenly spaced
    inputs = list(range(T_in - 1, -1, -in_step))[:cols][::-1]
    fig, axes = plt.subplots(2 * C, cols, figsize=(1.9 * cols + 1.0, 2.0 * 2 * C + 0.4), squeeze=False)
    fig.set_layout_engine("constrained")
    for c in range(C):
        lo = float(min(x[:, c].min(), y[:, c].min()))
        hi = float(max(x[:, c].max(), y[:, c].max()))
        suffix = f" c{c}" if C > 1 else ""
        for j in range(cols):
            if j >= len(inputs):  # fewer input frames than lead times: no empty framed cell
                fig.delaxes(axes[2 * c, j])
                continue
            t = inputs[j]
            ax = axes[2 * c, j]
            im = ax.imshow(x[t, c], vmin=lo, vmax=hi, cmap="RdBu_r")
            ax.set_title(f"input t={t - T_in + 1}{suffix}", fontsize=8)
        for j, t in enumerate(leads):
            ax = axes[2 * c + 1, j]
            im = ax.imshow(y[t, c], vmin=lo, vmax=hi, cmap="RdBu_r")
            ax.set_title(f"forecast +{t + 1}{suffix}", fontsize=8)
        for ax in axes[2 * c : 2 * c + 2].flat:
            ax.set_xticks([])
            ax.set_yticks([])
        shown = [ax for ax in axes[2 * c : 2 * c + 2].flat if ax in fig.axes]
        fig.colorbar(im, ax=shown, shrink=0.8, label=f"channel {c}" if C > 1 else None)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def predict_file(
    forecaster: Forecaster,
    input: str | Path,
    out: str | Path,
    *,
    variable: str | None = None,
    stride: int = 1,
    last: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
    figure: str | Path | None = None,
    sample: int = 0,
) -> dict[str, Any]:
    """Forecast every window of an input file (``.npy .npz .h5 .nc``) and write them to ``out``.

    Returns a summary (``windows``, ``shape``, ``out``, ``figure``). See ``_Windows`` for the input layouts;
    the output is ``(T_out, C, H, W)`` for a single window, else ``(N, T_out, C, H, W)``.
    """
    from sdkd.data._io import open_array

    where = f"--input {Path(input).name}"
    out = _check_output_path(out)
    if figure is not None:
        from sdkd.outputs import check_writable_file

        check_writable_file(figure, "--figure")
    stride = _positive_int(stride, "stride")
    bs = _positive_int(batch_size or forecaster.batch_size, "batch_size")
    windows = _Windows(open_array(input, variable, where), forecaster, stride, last, where)
    n = len(windows)
    if figure is not None and not 0 <= sample < n:
        raise ValueError(f"--sample must be in [0, {n}) for {n} window(s), got {sample}")
    result = np.empty((n, *forecaster.out_shape), dtype=np.float32)
    fig_x = None
    bar = _progress(n, progress and n > 1, f"predict {forecaster.name}")
    try:
        for a in range(0, n, bs):
            b = min(a + bs, n)
            xb = windows.read(a, b)
            forecaster.check_finite(xb, f"{where}: window(s) {a}:{b}", offset=a)
            yb = forecaster.forecast_chunk(xb)
            forecaster.check_forecast(yb, xb, f"{where}: the forecast of window(s) {a}:{b}")  # before any write
            result[a:b] = yb.cpu().numpy()
            if figure is not None and a <= sample < b:
                fig_x = xb[sample - a]
            if bar is not None:
                bar.update(b - a)
    finally:
        if bar is not None:
            bar.close()
    forecast = result[0] if windows.single else result
    attrs = {
        "model": forecaster.name,
        "in_shape": list(forecaster.in_shape),
        "out_frames": forecaster.out_frames,
        "input": str(input),
        "units": "physical (de-normalised)",
    }
    starts = windows.starts if windows.series and not windows.single else None
    path = write_forecast(out, forecast, starts, attrs)
    fig_path = None
    if figure is not None:
        title = f"{forecaster.name}: window {sample} of {Path(input).name}"
        fig_path = write_forecast_figure(fig_x, result[sample], figure, title=title)
    return {
        "windows": n,
        "shape": list(forecast.shape),
        "out": str(path),
        "figure": str(fig_path) if fig_path else None,
    }


# ============================================================================ CLI
class _Command:
    def __init__(self, configure, run):
        self.configure, self.run = configure, run


def _configure_predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by sdkd train/distill")
    parser.add_argument("--input", required=True, help="input windows or series (.npy .npz .h5 .nc), physical units")
    parser.add_argument("--out", required=True, help="forecast file (.npy .npz .h5 .nc)")
    parser.add_argument("--variable", default=None, help="array name inside .npz/.h5/.nc (if it holds several)")
    parser.add_argument("--stride", type=int, default=1, help="frames between sliding windows of a series")
    parser.add_argument(
        "--last", action="store_true", help="a series: forecast from its last T_in frames only; writes (T_out, C, H, W)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="windows per forward pass (lower it if memory runs out; default 64)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--figure", default=None, help="write a PNG of one forecast (needs matplotlib)")
    parser.add_argument("--sample", type=int, default=0, help="which window the figure shows")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true", help="replace --out / --figure if they exist")


def _run_predict(args: argparse.Namespace) -> int:
    from sdkd.outputs import refuse_existing

    refuse_existing([(args.out, "--out"), (args.figure, "--figure")], args.overwrite)
    f = Forecaster.from_checkpoint(args.checkpoint, device=args.device, batch_size=args.batch_size)
    res = predict_file(
        f,
        args.input,
        args.out,
        variable=args.variable,
        stride=args.stride,
        last=args.last,
        progress=not args.no_progress,
        figure=args.figure,
        sample=args.sample,
    )
    print(f"{f.name}: {res['windows']} window(s) -> {res['out']} {tuple(res['shape'])}")
    if res["figure"]:
        print(f"wrote {res['figure']}")
    return 0


def _configure_export(parser: argparse.ArgumentParser) -> None:
    from .export import FORMATS

    parser.add_argument("--checkpoint", required=True, help="checkpoint written by sdkd train/distill")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (onnxruntime) or torch-export (.pt2)")
    parser.add_argument("--out", required=True, help="output file (.onnx or .pt2); metadata goes to OUT.json")
    parser.add_argument(
        "--normalization",
        choices=("baked", "beside"),
        default="baked",
        help="baked: the graph maps physical units to physical units; beside: the graph works in "
        "normalised units and mean/std are only stored in OUT.json",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--no-check", action="store_true", help="skip the parity check against the eager model")
    parser.add_argument("--overwrite", action="store_true", help="replace --out and its metadata file if they exist")


def _run_export(args: argparse.Namespace) -> int:
    from sdkd.outputs import refuse_existing

    from .export import export_checkpoint, meta_path_of

    refuse_existing([(args.out, "--out"), (meta_path_of(args.out), "the metadata file")], args.overwrite)

    res = export_checkpoint(
        args.checkpoint,
        args.out,
        args.format,
        normalization=args.normalization,
        opset=args.opset,
        check=not args.no_check,
    )
    print(f"wrote {res.path} and {res.meta_path}")
    if res.max_abs_err is not None:
        print(f"parity with the eager model: max abs error {res.max_abs_err:.3g} (physical units)")
    return 0


predict_command = _Command(_configure_predict, _run_predict)
export_command = _Command(_configure_export, _run_export)
