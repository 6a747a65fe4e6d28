"""Glue from a config to a trained model: datasets, models, the distiller and evaluation.

``run_stage(cfg)`` trains a model (``stage: train``) or distills a student from teacher
checkpoints (``stage: distill``). Every checkpoint it writes carries what is needed to use the
model later without the config files: the model spec (name, shapes, config), the dataset's
normalisation and the full config, as plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import sdkd

from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError
from .distributed import DistInfo, init_distributed, is_main_process
from .interrupt import stopped_in
from .loggers import build_loggers
from .loop import FitResult, Trainer, to_device
from .progress import progress_enabled
from .run_dir import check_resume_config, prepare_run_dir

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------- data
Splitter = Callable[[str], Any]  # split name -> dataset


def _ns(data_cfg: Mapping[str, Any], t_in: int, t_out: int, progress: bool) -> Splitter:
    from sdkd import data as D
    from sdkd.data.navier_stokes import load_or_generate

    path = data_cfg.get("path")
    array, _ = load_or_generate(preset=data_cfg.get("preset") or "small", root=path, progress=progress)
    return lambda split: D.NavierStokesDataset(array, split, t_in, t_out, data_cfg.get("splits"))


def _ns_mat(data_cfg: Mapping[str, Any], t_in: int, t_out: int, progress: bool) -> Splitter:
    from sdkd import data as D

    path = _need(data_cfg.get("path"), "ns_mat")
    return lambda split: D.NavierStokesDataset(path, split, t_in, t_out, data_cfg.get("splits"))


def _rbc(data_cfg: Mapping[str, Any], t_in: int, t_out: int, progress: bool) -> Splitter:
    from sdkd import data as D
    from sdkd.data.rbc_cache import PRESET_SPLITS, load_or_generate

    preset = data_cfg.get("preset") or "small"
    _, rbc_path = load_or_generate(preset, root=data_cfg.get("path"), progress=progress)
    splits = data_cfg.get("splits")
    rbc_splits = splits if splits is not None else PRESET_SPLITS[preset]
    return lambda split: D.ArrayDataset(
        rbc_path, input_frames=t_in, output_frames=t_out, split=split, splits=rbc_splits
    )


def _weatherbench(data_cfg: Mapping[str, Any], t_in: int, t_out: int, progress: bool) -> Splitter:
    from sdkd import data as D

    path = _need(data_cfg.get("path"), "weatherbench")
    variables = tuple(data_cfg.get("variables") or ("t2m",))
    return lambda split: D.WeatherBenchDataset(path, variables, split, input_frames=t_in, output_frames=t_out)


def _taxibj(data_cfg: Mapping[str, Any], t_in: int, t_out: int, progress: bool) -> Splitter:
    from sdkd import data as D

    path = _need(data_cfg.get("path"), "taxibj")  # TaxiBJ and TaxiBJ+ (data.interval: 30min | day)
    splits = data_cfg.get("splits")
    kw = {"splits": splits} if splits is not None else {}
    interval = data_cfg.get("interval") or "30min"
    return lambda split: D.TaxiBJDataset(path, split, t_in, t_out, interval=interval, **kw)


def _array(data_cfg: Mapping[str, Any], t_in: int, t_out: int, progress: bool) -> Splitter:
    from sdkd import data as D

    path = _need(data_cfg.get("path"), "array")
    splits = data_cfg.get("splits")
    kw = {"splits": splits} if splits is not None else {}
    variables = data_cfg.get("variables")
    variable = variables[0] if isinstance(variables, (list, tuple)) else variables
    return lambda split: D.ArrayDataset(
        path, variable=variable, input_frames=t_in, output_frames=t_out, split=split, **kw
    )


def _ns_presets() -> list[str]:
    from sdkd.data.navier_stokes import PRESETS

    return list(PRESETS)


def _rbc_presets() -> list[str]:
    from sdkd.data.rbc_cache import PRESET_SPLITS

    return list(PRESET_SPLITS)


@dataclass(frozen=True)
class DatasetKind:
    """How ``data.name`` makes its splits: ``make(data_cfg, t_in, t_out, progress) -> (split -> dataset)``;
    ``presets`` lists the names ``data.preset`` may take (None: the kind has no presets); ``needs_path``: whether
    ``data.path`` is required."""

    make: Callable[[Mapping[str, Any], int, int, bool], Splitter]
    presets: Callable[[], Iterable[str]] | None = None
    needs_path: bool = True


#: The dataset kinds by ``data.name``: the one registry behind ``build_datasets`` and the config schema.
DATASETS: Mapping[str, DatasetKind] = {
    "ns": DatasetKind(_ns, presets=_ns_presets, needs_path=False),
    "rbc": DatasetKind(_rbc, presets=_rbc_presets, needs_path=False),
    "ns_mat": DatasetKind(_ns_mat),
    "weatherbench": DatasetKind(_weatherbench),
    "taxibj": DatasetKind(_taxibj),
    "array": DatasetKind(_array),
}


def build_datasets(data_cfg: Mapping[str, Any], seed: int = 42, progress: bool = True) -> dict[str, Any]:
    """``{"train", "val", "test"}`` datasets for ``data_cfg`` (see ``configs/`` for the keys)."""
    name = data_cfg["name"]
    if name not in DATASETS:
        raise ConfigError(f"data.name must be one of {', '.join(sorted(DATASETS))}, got {name!r}")
    t_in, t_out = int(data_cfg["input_frames"]), int(data_cfg["output_frames"])
    make = DATASETS[name].make(data_cfg, t_in, t_out, progress)
    return {split: make(split) for split in SPLITS}


def _need(path: Any, name: str) -> str:
    if not path:
        raise ConfigError(f"data.path is required for data.name={name!r}")
    return str(path)


def normalization_of(dataset: Any) -> dict[str, torch.Tensor]:
    return {"mean": torch.as_tensor(dataset.mean).double(), "std": torch.as_tensor(dataset.std).double()}


# ----------------------------------------------------------------------------- models
def model_spec(model_cfg: Mapping[str, Any], in_shape: tuple[int, ...], out_frames: int) -> dict[str, Any]:
    return {
        "name": str(model_cfg["name"]),
        "in_shape": [int(v) for v in in_shape],
        "out_frames": int(out_frames),
        "cfg": dict(model_cfg.get("cfg") or {}),
    }


def build_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """The model of a spec: a registry model built for its shapes, or an import path
    ``package.module:Class`` called with ``cfg`` as keyword arguments (:mod:`sdkd.models.imported`)."""
    from sdkd.models import build_model
    from sdkd.models.imported import build_imported, is_import_path

    try:
        if is_import_path(spec["name"]):
            return build_imported(spec["name"], spec["cfg"])
        return build_model(spec["name"], tuple(spec["in_shape"]), spec["out_frames"], **spec["cfg"])
    except TypeError as exc:
        raise ConfigError(f"model {spec['name']!r}: bad model.cfg {spec['cfg']}: {exc}") from None
    except ValueError as exc:
        if is_import_path(spec["name"]):
            raise ConfigError(str(exc)) from None
        raise


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model stored in an sdkd checkpoint (in eval mode) and the checkpoint's contents."""
    ck = load_checkpoint(path, map_location=device)
    if "model_spec" not in ck:
        raise CheckpointError(f"checkpoint {str(path)!r} has no model_spec; it was not written by sdkd train/distill")
    model = build_from_spec(ck["model_spec"])
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: weights do not match its model_spec: {exc}") from None
    return model.to(device).eval(), ck


# ----------------------------------------------------------------------------- distillation
class NoKD(nn.Module):
    """``distill.kd.type: none``: no prediction KD (e.g. feature-only AB distillation)."""

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return s.new_zeros(())

    def per_sample(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return s.new_zeros(s.shape[:1])


def build_kd_loss(kd_cfg: Mapping[str, Any]) -> nn.Module:
    """The prediction KD loss named by ``distill.kd`` (``type: spectral``, ``mse`` or ``none``)."""
    from sdkd.losses import SpectralKD

    if not isinstance(kd_cfg, Mapping):
        raise ConfigError(f"distill.kd must be a mapping (type: spectral, cutoffs: ..., ...), got {kd_cfg!r}")
    cfg = dict(kd_cfg)
    kind = cfg.pop("type", "spectral")
    if kind == "mse":
        return nn.MSELoss()
    if kind == "none":
        return NoKD()
    if kind == "spectral":
        try:
            return SpectralKD(**cfg)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"distill.kd: {exc}") from None
    raise ConfigError(f"distill.kd.type must be 'spectral', 'mse' or 'none', got {kind!r}")


def check_free_form(cfg: Mapping[str, Any]) -> None:
    """Check the free-form sections before any data is generated or a model trained, so that a typo ends in
    one clear line at once: ``model`` (its name and ``cfg`` keys, without building it) and, for a distill
    stage, ``distill.kd`` (by building the loss, which is cheap; other stages do not use it), the teacher
    entries, the strategy against the number of teachers and the ``distill.features`` mappings."""
    from .teachers import check_teacher_entries

    check_model_section(cfg["model"], "model")
    if cfg["stage"] == "distill":
        d = cfg["distill"]
        check_teacher_entries(d["teachers"], files=False)
        build_kd_loss(d["kd"])
        check_feature_loss(d)
        if not d["teachers"]:  # validate() says that the stage needs them
            return
        from sdkd.distill.strategies import check_strategy

        try:
            check_strategy(d["strategy"], len(d["teachers"]), float(d["C"]), d["grad_space"])
        except ValueError as exc:
            raise ConfigError(f"distill: {exc}") from None
        if d["per_sample"] and d["grad_space"] != "output":
            raise ConfigError(
                "distill.per_sample=true needs distill.grad_space=output (per-sample parameter "
                "gradients are not supported)"
            )
        _feature_pairs(d, len(d["teachers"]))


def _check_kd_grid(kd_cfg: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    """The prediction KD loss's bands against the data's grid, once it is known (before teachers are run)."""
    kd = build_kd_loss(kd_cfg)
    if hasattr(kd, "check_grid"):
        H, W = (int(v) for v in data["train"].in_shape[-2:])
        try:
            kd.check_grid(H, W)
        except ValueError as exc:
            raise ConfigError(f"distill.kd: {exc}") from None


def check_model_section(model: Mapping[str, Any], where: str) -> None:
    """A ``{name, cfg}`` model section: a registry name with its config keys, or an import path
    ``package.module:Class`` that imports to an ``nn.Module`` subclass accepting ``cfg``."""
    from sdkd.models import check_model_config
    from sdkd.models.imported import check_imported_config, is_import_path

    name, model_cfg = str(model["name"]), model.get("cfg") or {}
    if not isinstance(model_cfg, Mapping):
        raise ConfigError(f"{where}.cfg must be a mapping of model arguments, got {model_cfg!r}")
    try:
        if is_import_path(name):
            check_imported_config(name, model_cfg)
        else:
            check_model_config(name, model_cfg)
    except TypeError as exc:
        raise ConfigError(f"{where}.cfg: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}.name: {exc}") from None


def check_feature_loss(d: Mapping[str, Any]) -> None:
    """``distill.feature_loss`` names a registered feature loss and ``distill.feature_cfg`` holds options
    it accepts (checked by building it for small example shapes, before any data or model exists)."""
    from sdkd.losses import FEATURE_LOSSES, build_feature_loss

    kind, options = d["feature_loss"], d.get("feature_cfg") or {}
    if kind not in FEATURE_LOSSES:
        raise ConfigError(f"distill.feature_loss must be one of {', '.join(FEATURE_LOSSES)}, got {kind!r}")
    if not isinstance(options, Mapping):
        raise ConfigError(f"distill.feature_cfg must be a mapping of {kind} loss options, got {options!r}")
    try:
        # a fine example grid: the options are checked here, the real feature grids (SpectralKD's bands need a bin
        # of each) once the models exist
        build_feature_loss(kind, (2, 4, 1024, 1024), (2, 4, 1024, 1024), **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"distill.feature_cfg: {exc}") from None


def _check_teachers_exist(cfg: Mapping[str, Any]) -> None:
    """A distill stage's teacher checkpoints must exist before its data is generated."""
    if cfg["stage"] == "distill":
        from .teachers import check_teacher_entries

        check_teacher_entries(cfg["distill"]["teachers"])


def _feature_pairs(d: Mapping[str, Any], num_teachers: int) -> list[dict[str, Any]]:
    """``distill.features``: one ``{student: teacher}`` mapping for all teachers or a list, one per teacher;
    a teacher side is a feature name or ``{band: feature name}`` (per-band branch taps, ``spectral`` only)."""
    feats = d.get("features") or {}
    rows = [feats] * num_teachers if isinstance(feats, Mapping) else list(feats)
    if len(rows) != num_teachers or not all(isinstance(r, Mapping) for r in rows):
        raise ConfigError(
            f"distill.features: give one {{student: teacher}} mapping or one per teacher ({num_teachers})"
        )
    if any(rows) and not float(d["feature_lam"]) > 0:
        raise ConfigError("distill.features is set but distill.feature_lam is 0; give feature_lam > 0")
    return [{str(k): _tap(v, str(k)) for k, v in r.items()} for r in rows]


def _tap(value: Any, student_name: str) -> str | dict[str, str]:
    if isinstance(value, Mapping):
        if not value:
            raise ConfigError(f"distill.features: {student_name} maps to an empty {{band: teacher feature}}")
        return {str(band): str(name) for band, name in value.items()}
    return str(value)


def _feature_losses(
    d: Mapping[str, Any], pairs: list[dict[str, Any]], student: nn.Module, teachers: list, sample, device
):
    """One feature loss (``distill.feature_loss`` with the options ``distill.feature_cfg``) per teacher and pair,
    its adapter sized from one sample."""
    from sdkd.distill.cache import run_teacher
    from sdkd.distill.distiller import teacher_feature_names
    from sdkd.distill.taps import forward_with_features
    from sdkd.losses import build_feature_loss

    kind, options = d["feature_loss"], dict(d.get("feature_cfg") or {})
    x = sample[0].unsqueeze(0).to(device)
    names = sorted({s for row in pairs for s in row})
    was_training = student.training
    student.to(device).eval()  # one sample: BatchNorm must not use (or update) batch statistics
    try:
        with torch.no_grad():
            _, sfeats = forward_with_features(student, x, names, "the student")
    except KeyError as exc:
        raise ConfigError(f"distill.{exc.args[0]}") from None
    finally:
        student.train(was_training)
    table = []
    for m, (row, teacher) in enumerate(zip(pairs, teachers)):
        try:
            tfeats = run_teacher(teacher, x, teacher_feature_names(row), m)
        except KeyError as exc:
            raise ConfigError(f"distill.{exc.args[0]}") from None
        losses = {}
        for s, tap in row.items():
            t_shape = {b: tfeats[n].shape for b, n in tap.items()} if isinstance(tap, Mapping) else tfeats[tap].shape
            try:
                losses[s] = build_feature_loss(kind, sfeats[s].shape, t_shape, **options).to(device)
            except ValueError as exc:
                raise ConfigError(f"distill.features ({s} -> {tap}, teacher {m}): {exc}") from None
        table.append(losses)
    return table


def _distill_parts(cfg: Mapping, data: Mapping[str, Any], student: nn.Module, device: torch.device, log):
    from sdkd.distill import Distiller, IndexedDataset, TeacherCache
    from sdkd.distill.distiller import teacher_feature_names

    from .teachers import load_teacher

    d = cfg["distill"]
    _check_kd_grid(d["kd"], data)
    in_shape, out_frames = tuple(data["train"].in_shape), int(data["train"].out_frames)
    teachers = [load_teacher(entry, in_shape, out_frames, device) for entry in d["teachers"]]
    pairs = _feature_pairs(d, len(teachers))
    feature_loss = None
    if any(pairs):
        feature_loss = _feature_losses(d, pairs, student, teachers, data["train"][0], device)
    cache = None
    train_set = data["train"]
    if d.get("cache", True):
        log(f"caching {len(teachers)} teacher(s) over {len(train_set)} training samples")
        names = [teacher_feature_names(p) for p in pairs]
        show = progress_enabled(cfg["train"].get("progress", True), is_main_process())
        with stopped_in("the teacher cache build", Path(cfg["out_dir"]) / "last.pt"):
            cache = TeacherCache.build(teachers, train_set, features=names, device=device, progress=show)
        train_set = IndexedDataset(train_set)
    distiller = Distiller(
        student,
        teachers if cache is None else None,
        strategy=d["strategy"],
        kd_loss=build_kd_loss(d["kd"]),
        lam=float(d["lam"]),
        features=pairs if any(pairs) else None,
        feature_loss=feature_loss,
        feature_lam=float(d["feature_lam"]),
        C=float(d["C"]),
        grad_space=d["grad_space"],
        per_sample=bool(d["per_sample"]),
        cache=cache,
    )

    def loss_fn(batch: Any, model: nn.Module) -> dict[str, Any]:
        if cache is not None:
            idx, x, y = batch  # idx stays on the host (indices_on_host): the cache is read there
            out = distiller(x, y, index=idx)
        else:
            x, y = batch
            out = distiller(x, y)
        ready = out.grads is not None
        if ready:
            distiller.backward(out)
        return {"loss": out.loss, "logs": out.terms, "grads_ready": ready}  # 0-dim device tensors: no host read

    return distiller, train_set, loss_fn


def indices_on_host(batch: Any, device: torch.device) -> Any:
    """Move an ``(index, x, y)`` batch of the teacher cache to ``device`` except its indices: the cache is
    read on the host, and copying the indices back would be a device-to-host read every step."""
    if isinstance(batch, (list, tuple)) and len(batch) == 3:
        return type(batch)([batch[0], *to_device(list(batch[1:]), device)])
    return to_device(batch, device)


# ----------------------------------------------------------------------------- stages
def run_stage(
    cfg: Mapping[str, Any],
    resume: bool = False,
    device: str | None = None,
    log: Callable[[str], None] = print,
    datasets: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    on_epoch_end: Callable[[int, int, float], None] | None = None,
) -> FitResult:
    """Train (``cfg["stage"] == "train"``) or distill a model as configured; writes
    ``best.pt``/``last.pt``/metrics into ``cfg["out_dir"]``.

    A folder that already holds a run is refused unless ``resume`` (continue it; its config must match up to
    ``run_dir.RESUMABLE_KEYS``) or ``overwrite`` (replace sdkd's files there); see ``sdkd.train.run_dir``.
    ``on_epoch_end(epoch, epochs, seconds)`` is called after each epoch (rank 0; e.g.
    ``StageProgress.epoch_done``). Ctrl-C raises ``sdkd.train.interrupt.Interrupted`` saying where it stopped."""
    from .config import validate

    cfg = validate(cfg)  # values and typos fail here, not after data generation
    _check_teachers_exist(cfg)
    info: DistInfo = init_distributed(device)
    if info.is_main:  # before any data is made: the folder is usable, and a resume continues the same run
        _prepare_out_dir(cfg, resume, overwrite, log)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and info.enabled:
        dev = torch.device("cuda", info.local_rank)
    torch.manual_seed(int(cfg["seed"]))
    if cfg["train"].get("deterministic", True):
        torch.use_deterministic_algorithms(True, warn_only=True)
    if datasets is None:
        with stopped_in("the data preparation", Path(cfg["out_dir"]) / "last.pt"):
            datasets = build_datasets(
                cfg["data"], cfg["seed"], progress_enabled(cfg["train"]["progress"], info.is_main)
            )
    data = dict(datasets)
    spec = model_spec(cfg["model"], data["train"].in_shape, data["train"].out_frames)
    model = build_from_spec(spec)
    extra_state = {
        "config": _plain(cfg),
        "model_spec": spec,
        "normalization": normalization_of(data["train"]),
        "sdkd_version": sdkd.__version__,
    }
    train_set, loss_fn, extra_modules = data["train"], None, None
    distiller, batch_to_device = None, to_device
    if cfg["stage"] == "distill":
        if cfg["distill"]["grad_space"] == "params" and info.enabled:
            raise ConfigError("distill.grad_space='params' is not supported with several processes (DDP)")
        distiller, train_set, loss_fn = _distill_parts(cfg, data, model, dev, log)
        extra_modules = {"feature_losses": distiller.feature_loss_modules}
        if distiller.cache is not None:
            batch_to_device = indices_on_host
    trainer = Trainer(
        model,
        train_set,
        data["val"],
        cfg["train"],
        cfg["out_dir"],
        batch_size=int(cfg["data"]["batch_size"]),
        seed=int(cfg["seed"]),
        extra_modules=extra_modules,
        extra_state=extra_state,
        device=dev,
        dist_info=info,
        num_workers=int(cfg["data"].get("num_workers", 0)),
        log=log,
        batch_to_device=batch_to_device,
        loggers=build_loggers(cfg["train"].get("loggers") or (), cfg["out_dir"]) if info.is_main else (),
        on_epoch_end=on_epoch_end,
        **({"loss_fn": loss_fn} if loss_fn is not None else {}),
    )
    if distiller is not None:
        distiller.student = trainer.wrapped  # gradients of the student sync under DDP
    return trainer.fit(resume=resume)


def _prepare_out_dir(cfg: Mapping[str, Any], resume: bool, overwrite: bool, log: Callable[[str], None]) -> None:
    out = prepare_run_dir(cfg["out_dir"], resume=resume, overwrite=overwrite)
    last = out / "last.pt"
    if resume and last.is_file():
        changed = check_resume_config(load_checkpoint(last).get("config"), _plain(cfg), last)
        if changed:
            log(f"resuming {last} with changed {', '.join(changed)}")


def _plain(value: Any) -> Any:
    """Config as plain data (dict/list/str/number/bool/None) for weights-only checkpoints."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
