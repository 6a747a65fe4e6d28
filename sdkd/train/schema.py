"""The config schema: the type and range of every value, checked before any data is made.

One rule per key of ``DEFAULTS`` (``sdkd.train.config``) outside the free-form sections, which their
consumers check (``run.check_free_form``). A rule returns the value normalised (``1e3`` for an
integer key becomes ``1000``, a number read as a string by YAML 1.1 such as ``3e-4`` becomes the
number) or raises :class:`ConfigError` naming the key, the value and what is allowed, in one line.
Choices come from the registries of the things they name (models, dataset kinds and presets,
strategies, feature losses, schedulers), so adding one there makes it valid here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sdkd.errors import SdkdError

STAGES = ("train", "distill")


class ConfigError(SdkdError, ValueError):
    """A configuration key or value is invalid."""


def _bad(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"config key {key}: got {value!r}; expected {allowed}")


def _as_number(value: Any) -> Any:
    """A string holding a number (YAML 1.1 reads ``3e-4`` and ``1e3`` as strings) as that number."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() and not any(c in value.lower() for c in ".en") else number
    return value


@dataclass(frozen=True)
class Integer:
    """An integer in ``[low, high]`` (an integral float such as ``1e3`` is accepted); ``null`` when ``none`` says
    what it means."""

    low: int | None = None
    high: int | None = None
    none: str | None = None
    text: str | None = None  # what is allowed, when the bounds read badly

    def __call__(self, key: str, value: Any) -> Any:
        if value is None and self.none is not None:
            return None
        value = _as_number(value)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and (self.low is None or value >= self.low) and (self.high is None or value <= self.high):
            return value
        raise _bad(key, value, self.describe())

    def describe(self) -> str:
        if self.text is not None:
            text = self.text
        elif self.low is not None and self.high is not None:
            text = f"an integer from {self.low} to {self.high}"
        elif self.low is not None:
            text = f"an integer >= {self.low}"
        else:
            text = "an integer"
        return text + (f", or null ({self.none})" if self.none else "")


@dataclass(frozen=True)
class Number:
    """A finite number with optional bounds (``open_low``: strictly above ``low``)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def __call__(self, key: str, value: Any) -> Any:
        value = _as_number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            above = self.low is None or (value > self.low if self.open_low else value >= self.low)
            if above and (self.high is None or value <= self.high):
                return float(value)
        raise _bad(key, value, self.describe())

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return "a finite number" + (" " + " and ".join(parts) if parts else "")


@dataclass(frozen=True)
class Flag:
    """``true`` or ``false`` (YAML's yes/no/on/off are booleans too; ``1``, ``"maybe"`` are not)."""

    def __call__(self, key: str, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        raise _bad(key, value, "true or false")


@dataclass(frozen=True)
class OneOf:
    """One of the names a registry holds; ``choices`` is called when checking, so the registry is the source."""

    choices: Callable[[], Iterable[str]]
    nullable: bool = False

    def __call__(self, key: str, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        names = sorted(self.choices())
        if isinstance(value, str) and value in names:
            return value
        raise _bad(key, value, "one of " + ", ".join(names) + (" or null" if self.nullable else ""))


@dataclass(frozen=True)
class ModelName:
    """A registered model name, or an import path ``package.module:Class`` (checked by ``run.check_model_section``)."""

    def __call__(self, key: str, value: Any) -> Any:
        from sdkd.models.imported import is_import_path

        if isinstance(value, str) and (value in _models() or is_import_path(value)):
            return value
        raise _bad(key, value, "one of " + ", ".join(sorted(_models())) + " or an import path package.module:Class")


@dataclass(frozen=True)
class Text:
    """A non-empty string, e.g. a path (a number such as ``out_dir=2024`` is taken as its text)."""

    nullable: bool = False

    def __call__(self, key: str, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value.strip():
            return value
        raise _bad(key, value, "a non-empty string" + (" or null" if self.nullable else ""))


@dataclass(frozen=True)
class Names:
    """``null``, one name or a non-empty list of names (e.g. the variables to read)."""

    def __call__(self, key: str, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value):
            return value
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
            return list(value)
        raise _bad(key, value, "null, a name or a non-empty list of names")


@dataclass(frozen=True)
class NameList:
    """A list of names, each one of those a registry holds (an empty list: none)."""

    choices: Callable[[], Iterable[str]]

    def __call__(self, key: str, value: Any) -> Any:
        names = sorted(self.choices())
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v in names for v in value):
            return list(value)
        raise _bad(key, value, f"a list of names from {', '.join(names)} (or [])")


@dataclass(frozen=True)
class Splits:
    """``null`` or a split spec, checked by the loaders' own rule (``sdkd.data.resolve_splits``) for its form;
    whether the counts fit the data is checked once the data is known."""

    def __call__(self, key: str, value: Any) -> Any:
        if value is None:
            return None
        from sdkd.data.windows import resolve_splits

        try:
            resolve_splits(1 << 40, value, f"config key {key}")
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        return value


# ----------------------------------------------------------------------------- registries (read when checking)
def _models() -> Iterable[str]:
    from sdkd.models import list_models

    return list_models()


def _taxibj_intervals() -> Iterable[str]:
    from sdkd.data.taxibj import INTERVALS

    return INTERVALS


def _datasets() -> Iterable[str]:
    from .run import DATASETS

    return DATASETS


def _schedulers() -> Iterable[str]:
    from .loop import SCHEDULERS

    return SCHEDULERS


def _loggers() -> Iterable[str]:
    from .loggers import LOGGERS

    return LOGGERS


def _strategies() -> Iterable[str]:
    from sdkd.distill.strategies import STRATEGIES

    return STRATEGIES


def _grad_spaces() -> Iterable[str]:
    from sdkd.distill.strategies import GRAD_SPACES

    return GRAD_SPACES


def _feature_losses() -> Iterable[str]:
    from sdkd.losses.feature_kd import FEATURE_LOSSES

    return FEATURE_LOSSES


Rule = Callable[[str, Any], Any]

#: dotted key -> rule, for every key of DEFAULTS outside the free-form sections (``data.preset`` is checked
#: against the chosen dataset's presets by ``check_values``).
SCHEMA: Mapping[str, Rule] = {
    "stage": OneOf(lambda: STAGES),
    "seed": Integer(0, 2**63 - 1, text="an integer >= 0 (below 2**63)"),
    "out_dir": Text(),
    "data.name": OneOf(_datasets),
    "data.preset": Text(nullable=True),
    "data.path": Text(nullable=True),
    "data.variables": Names(),
    "data.input_frames": Integer(1),
    "data.output_frames": Integer(1),
    "data.splits": Splits(),
    "data.interval": OneOf(_taxibj_intervals, nullable=True),
    "data.batch_size": Integer(1),
    "data.num_workers": Integer(0),
    "model.name": ModelName(),
    "train.epochs": Integer(1),
    "train.lr": Number(0.0, open_low=True),
    "train.weight_decay": Number(0.0),
    "train.scheduler": OneOf(_schedulers),
    "train.warmup_epochs": Integer(0),
    "train.patience": Integer(0),
    "train.clip_grad": Number(0.0),
    "train.amp": Flag(),
    "train.progress": Flag(),
    "train.max_steps_per_epoch": Integer(1, none="every batch of the epoch"),
    "train.log_every": Integer(1),
    "train.deterministic": Flag(),
    "train.loggers": NameList(_loggers),
    "distill.strategy": OneOf(_strategies),
    "distill.lam": Number(0.0),
    "distill.feature_loss": OneOf(_feature_losses),
    "distill.feature_lam": Number(0.0),
    "distill.C": Number(0.0, 1.0, open_low=True),
    "distill.grad_space": OneOf(_grad_spaces),
    "distill.per_sample": Flag(),
    "distill.cache": Flag(),
}


def check_values(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with every schema key checked and normalised (a new dict; ``cfg`` is not changed), plus the
    rules that tie keys together. Raises :class:`ConfigError` on the first bad value."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in cfg.items()}
    for key, rule in SCHEMA.items():
        section, _, name = key.rpartition(".")
        where = out[section] if section else out
        if name in where:
            where[name] = rule(key, where[name])
    _check_preset(out["data"])
    _check_relations(out)
    return out


def check_section(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of one section present in ``values`` (e.g. the ``train`` mapping given to ``Trainer``), checked and
    normalised; other keys are left as they are."""
    out = dict(values)
    for key, rule in SCHEMA.items():
        sec, _, name = key.rpartition(".")
        if sec == section and name in out:
            out[name] = rule(key, out[name])
    return out


def _check_preset(data: Mapping[str, Any]) -> None:
    """``data.preset`` names one of the chosen dataset kind's presets (kinds without presets ignore it)."""
    from .run import DATASETS

    presets = DATASETS[data["name"]].presets
    if presets is not None and data.get("preset") is not None:
        OneOf(presets)("data.preset", data["preset"])
    if DATASETS[data["name"]].needs_path and not data.get("path"):
        raise ConfigError(f"config key data.path: required for data.name={data['name']!r} (a file or folder)")


def _check_relations(cfg: Mapping[str, Any]) -> None:
    t = cfg["train"]
    if t["warmup_epochs"] and t["scheduler"] != "cosine":
        raise ConfigError(
            f"config key train.warmup_epochs: got {t['warmup_epochs']}, but warm-up is part of the cosine schedule "
            f"and train.scheduler is {t['scheduler']!r}; set train.scheduler=cosine or train.warmup_epochs=0"
        )
    if t["warmup_epochs"] >= t["epochs"] and t["warmup_epochs"]:
        raise ConfigError(
            f"config key train.warmup_epochs: got {t['warmup_epochs']}; expected fewer than train.epochs "
            f"({t['epochs']}), or the learning rate never leaves the warm-up"
        )
