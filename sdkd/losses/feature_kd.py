"""``FeatureKD``: feature distillation over several named (student, teacher) feature pairs.

Models return ``(prediction, {name: feature})`` from ``forward(x, return_features=True)``
(``sdkd.models``). ``FeatureKD`` pairs student features with teacher features by name, builds one
adapted loss per pair from example shapes, and returns the weighted sum of the pair losses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch
from torch import nn

from ._checks import MissingFeatureError
from .ab import ABLoss
from .adapters import FeatureAdapter
from .attention_transfer import AttentionTransfer
from .branch_spectral import BranchSpectralKD
from .feature import AdaptedFeatureLoss, FeatureMSE
from .spectral import SpectralKD

Pairs = Union[Mapping[str, Any], Sequence[tuple[str, Any]]]
Shape = Union[Sequence[int], torch.Tensor]
# A teacher tap: one feature name, or {band: feature name} for spectral (each band from its own branch).
TeacherTap = Union[str, Mapping[str, str]]


def _lookup(features: Mapping[str, object], name: str, side: str) -> object:
    if not isinstance(features, Mapping):
        raise TypeError(f"FeatureKD: {side} features must be a mapping {{name: tensor}}, got {type(features).__name__}")
    if name not in features:
        raise MissingFeatureError(f"FeatureKD: {side} feature {name!r} not found; available: {sorted(features)}")
    return features[name]


def lookup_tap(features: Mapping[str, object], tap: TeacherTap, side: str = "teacher") -> object:
    """The teacher feature (or ``{band: feature}``) a tap names, from ``{name: feature}``."""
    if isinstance(tap, Mapping):
        return {band: _lookup(features, name, side) for band, name in tap.items()}
    return _lookup(features, tap, side)


def _as_tap(tap: object) -> TeacherTap:
    if isinstance(tap, Mapping):
        if not tap:
            raise ValueError("FeatureKD: a per-band teacher tap {band: feature} is empty")
        return {str(band): str(name) for band, name in tap.items()}
    return str(tap)


def _tap_label(tap: TeacherTap) -> str:
    return "+".join(f"{band}:{name}" for band, name in tap.items()) if isinstance(tap, Mapping) else tap


def _no_band_taps(loss: str, teacher_shape: object) -> None:
    if isinstance(teacher_shape, Mapping):
        raise ValueError(
            f"FeatureKD: per-band teacher taps {{band: feature}} need loss='spectral', not {loss!r}; "
            "give one teacher feature name"
        )


def _mse(student_shape: Shape, teacher_shape: Shape, adapter_kwargs: Mapping, **loss_kwargs) -> nn.Module:
    _no_band_taps("mse", teacher_shape)
    if loss_kwargs:
        raise ValueError(f"FeatureKD: loss='mse' takes no loss options, got {sorted(loss_kwargs)}")
    return FeatureMSE.from_shapes(student_shape, teacher_shape, **adapter_kwargs)


def _ab(student_shape: Shape, teacher_shape: Shape, adapter_kwargs: Mapping, **loss_kwargs) -> nn.Module:
    _no_band_taps("ab", teacher_shape)
    return ABLoss.from_shapes(student_shape, teacher_shape, **loss_kwargs, **adapter_kwargs)


def _spectral(
    student_shape: Shape, teacher_shape: Shape | Mapping[str, Shape], adapter_kwargs: Mapping, **loss_kwargs
) -> nn.Module:
    if isinstance(teacher_shape, Mapping):  # each band from its own teacher branch
        loss = BranchSpectralKD.from_shapes(student_shape, teacher_shape, adapter_kwargs, **loss_kwargs)
        grid = next(iter(teacher_shape.values()))
    else:
        loss = AdaptedFeatureLoss(
            FeatureAdapter.from_shapes(student_shape, teacher_shape, **adapter_kwargs), SpectralKD(**loss_kwargs)
        )
        grid = teacher_shape
    H, W = tuple(grid.shape if isinstance(grid, torch.Tensor) else grid)[-2:]
    loss.criterion.check_grid(int(H), int(W))  # the adapted student takes the teacher's grid: a bin in every band
    return loss


def _at(student_shape: Shape, teacher_shape: Shape, adapter_kwargs: Mapping, **loss_kwargs) -> nn.Module:
    _no_band_taps("at", teacher_shape)
    if adapter_kwargs:
        raise ValueError(
            f"FeatureKD: loss='at' compares channel-pooled maps and has no adapter; drop {sorted(adapter_kwargs)}"
        )
    return AttentionTransfer.from_shapes(student_shape, teacher_shape, **loss_kwargs)


# The feature losses by name: ``builder(student_shape, teacher_shape, adapter_kwargs, **loss_kwargs)``
# -> an ``nn.Module`` ``(student_feature, teacher_feature) -> scalar`` with a ``per_sample`` method.
# ``FeatureKD(loss=...)`` and the config key ``distill.feature_loss`` take these names.
FEATURE_LOSSES: dict[str, Callable[..., nn.Module]] = {
    "mse": _mse,  # FeatureMSE: FitNets-style hints through a 1x1 conv + BN adapter
    "ab": _ab,  # ABLoss: activation boundaries (Heo et al. 2019)
    "spectral": _spectral,  # SpectralKD on adapted features; {band: tap} distills each band from its own branch
    "at": _at,  # AttentionTransfer: spatial attention maps (Zagoruyko & Komodakis 2017)
}


def build_feature_loss(
    loss: str,
    student_shape: Shape,
    teacher_shape: Shape | Mapping[str, Shape],
    adapter_kwargs: Mapping | None = None,
    **loss_kwargs,
) -> nn.Module:
    """One feature loss of kind ``loss`` (a :data:`FEATURE_LOSSES` name) for the given example shapes;
    ``teacher_shape`` may be ``{band: shape}`` for ``"spectral"`` (per-band branch taps)."""
    if loss not in FEATURE_LOSSES:
        raise ValueError(f"FeatureKD: loss must be one of {tuple(FEATURE_LOSSES)}, got {loss!r}")
    return FEATURE_LOSSES[loss](student_shape, teacher_shape, dict(adapter_kwargs or {}), **loss_kwargs)


class FeatureKD(nn.Module):
    """Weighted sum of adapted feature losses over named (student, teacher) feature pairs.

    Args:
        pairs: ``{student_feature_name: teacher_tap}`` (or a list of pairs); a tap is a teacher feature
            name, or for ``loss="spectral"`` ``{band: teacher feature name}`` (e.g.
            ``{"low": "block0.low", "high": "block0.high"}``: each band from its own branch).
        student_shapes, teacher_shapes: ``{name: shape or example tensor}`` (batch dim included),
            e.g. the feature dicts of one forward pass; used to size the adapters.
        loss: a :data:`FEATURE_LOSSES` name: ``"mse"`` (FeatureMSE), ``"ab"`` (ABLoss), ``"spectral"``
            (SpectralKD on adapted features, BranchSpectralKD for band taps) or ``"at"`` (AttentionTransfer).
        weights: one weight per pair (sequence in pair order, or ``{student_name: weight}``); default 1.
        adapter_kwargs: options of :class:`FeatureAdapter` (``bn``, ``project``, ``time_fold``).
        loss_kwargs: options of the loss (``margin``/``reduction`` for AB, SpectralKD's for spectral,
            ``p``/``reduction`` for AT).

    A name missing from the features raises :class:`MissingFeatureError` (a ``ValueError`` and a
    ``KeyError``) naming it and listing the available names.
    """

    def __init__(
        self,
        pairs: Pairs,
        student_shapes: Mapping[str, Sequence[int] | torch.Tensor],
        teacher_shapes: Mapping[str, Sequence[int] | torch.Tensor],
        loss: str = "mse",
        weights: Sequence[float] | Mapping[str, float] | None = None,
        adapter_kwargs: Mapping | None = None,
        **loss_kwargs,
    ) -> None:
        super().__init__()
        self.pairs = [(str(a), _as_tap(b)) for a, b in (pairs.items() if isinstance(pairs, Mapping) else pairs)]
        if not self.pairs:
            raise ValueError("FeatureKD: pairs is empty; give at least one {student_name: teacher_name}")
        if loss not in FEATURE_LOSSES:
            raise ValueError(f"FeatureKD: loss must be one of {tuple(FEATURE_LOSSES)}, got {loss!r}")
        self.loss_type = loss
        self.weights = self._weights(weights)
        self.losses = nn.ModuleList(
            build_feature_loss(
                loss,
                _lookup(student_shapes, s, "student"),
                lookup_tap(teacher_shapes, t),
                adapter_kwargs,
                **loss_kwargs,
            )
            for s, t in self.pairs
        )

    def _weights(self, weights: Sequence[float] | Mapping[str, float] | None) -> list[float]:
        n = len(self.pairs)
        if weights is None:
            return [1.0] * n
        if isinstance(weights, Mapping):
            unknown = set(weights) - {s for s, _ in self.pairs}
            if unknown:
                raise MissingFeatureError(
                    f"FeatureKD: weights name unknown student feature(s) {sorted(unknown)}; pairs: {self.pairs}"
                )
            return [float(weights.get(s, 1.0)) for s, _ in self.pairs]
        w = [float(x) for x in weights]
        if len(w) != n:
            raise ValueError(f"FeatureKD: {n} feature pair(s) but {len(w)} weights")
        return w

    @classmethod
    @torch.no_grad()
    def from_models(
        cls, student: nn.Module, teacher: nn.Module, example_input: torch.Tensor, pairs: Pairs, **kwargs
    ) -> FeatureKD:
        """Size the adapters from one forward of each model on ``example_input`` (in eval mode, modes
        restored afterwards); the result lives on ``example_input``'s device. Feature names are those a
        model returns from ``forward(x, return_features=True)`` or module paths of any ``nn.Module``
        (:func:`sdkd.distill.forward_with_features`)."""
        from sdkd.distill.taps import forward_with_features

        items = list(pairs.items() if isinstance(pairs, Mapping) else pairs)
        s_names = [str(a) for a, _ in items]
        t_names = [str(n) for _, b in items for n in (b.values() if isinstance(b, Mapping) else (b,))]
        shapes = []
        for model, names, who in ((student, s_names, "the student"), (teacher, t_names, "the teacher")):
            was_training = model.training
            model.eval()
            try:
                _, feats = forward_with_features(model, example_input, names, who)
            finally:
                model.train(was_training)
            shapes.append({k: tuple(v.shape) for k, v in feats.items()})
        return cls(pairs, shapes[0], shapes[1], **kwargs).to(example_input.device)

    def _terms(self, student_features: Mapping[str, torch.Tensor], teacher_features: Mapping[str, torch.Tensor]):
        for (s, t), w, fn in zip(self.pairs, self.weights, self.losses):
            yield (
                f"{s}->{_tap_label(t)}",
                w,
                fn(_lookup(student_features, s, "student"), lookup_tap(teacher_features, t)),
            )

    def forward(
        self, student_features: Mapping[str, torch.Tensor], teacher_features: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Weighted sum of the pair losses (a scalar)."""
        total = None
        for _, w, value in self._terms(student_features, teacher_features):
            total = w * value if total is None else total + w * value
        return total

    @torch.no_grad()
    def components(
        self, student_features: Mapping[str, torch.Tensor], teacher_features: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Detached weighted pair terms ``{"student_name->teacher_name": value}``; they sum to the loss."""
        return {name: (w * value).detach() for name, w, value in self._terms(student_features, teacher_features)}

    def extra_repr(self) -> str:
        return f"loss={self.loss_type!r}, pairs={self.pairs}, weights={self.weights}"
