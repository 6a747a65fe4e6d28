"""``SpectralKD``: the frequency-band distillation loss (DESIGN.md section 5, paper eq. 10) as an ``nn.Module``.

A thin wrapper over :func:`sdkd.ops.spectral_loss`; the op does the maths and picks the backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..ops.spectral_cutoffs import as_cutoffs, check_bands
from ..ops.spectral_loss import REDUCTIONS, spectral_band_terms, spectral_loss
from ._checks import check_finite_loss, check_pair

WEIGHTINGS = ("fixed", "adaptive")


class SpectralKD(nn.Module):
    """Spectral-decoupled distillation loss between a student and a teacher tensor of shape ``(..., H, W)``.

    ``D = rfft2(s - t, norm="ortho")`` is split into ``len(cutoffs) + 1`` radial bands (band 0, the
    "low" band, is ``r <= cutoffs[0]`` in cycles per sample) and the loss is the weighted sum of the
    band errors. With ``reduction="mean"`` and all weights 1 it equals ``F.mse_loss(s, t)``.

    Args:
        cutoffs: one cutoff (two bands, default 0.25) or an increasing sequence (more bands), in cycles per
            sample, each in ``[0, sqrt(0.5))``. Values that leave a band without any frequency bin are errors:
            booleans and cutoffs ``>= sqrt(0.5)`` at construction, cutoffs with no bin between them on the
            grid ``H x W`` at the first call (or :meth:`check_grid`).
        alpha: weight of the low band when ``weights`` is None; the other bands get 1. The default 1
            is exact output MSE; ``alpha=2`` is the first setting to try (it beat plain MSE on every
            seed of the NSE comparison in README "Demo results" and docs/results.md).
        weights: explicit per-band weights (one per band); giving it with ``alpha != 1`` is an error.
        reduction: ``"mean"`` (sum of Hermitian-weighted band energies / numel, an exact split of the
            MSE) or ``"band_mean"`` (each band's mean ``|D|^2`` over its bins, as the authors' code).
        weighting: ``"fixed"`` or ``"adaptive"`` (each band's error divided by the teacher's detached
            energy in that band plus ``eps``: relative errors, so weak high bands are not drowned).
            Use ``adaptive`` only when the target's high band carries real energy: on smooth fields it
            gives the weak high band a huge weight and hurt the student badly in our comparisons.
        eps: stabiliser of the adaptive weighting.
        backend: backend of :func:`sdkd.ops.spectral_loss` (``"auto"`` picks the fastest usable one).

    Like ``F.mse_loss``, gradients reach both inputs: pass the teacher detached (or computed under
    ``torch.no_grad()``). Inputs of different float dtypes are promoted to the wider one. NaN/Inf in
    either input raises a ``ValueError`` naming it.
    """

    def __init__(
        self,
        cutoffs: float | Sequence[float] = 0.25,
        alpha: float = 1.0,
        weights: Sequence[float] | None = None,
        reduction: str = "mean",
        weighting: str = "fixed",
        eps: float = 1e-6,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.cutoffs = as_cutoffs(cutoffs, "SpectralKD")
        n_bands = len(self.cutoffs) + 1
        alpha = float(alpha)
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"SpectralKD: alpha must be finite and >= 0, got {alpha}")
        if weights is None:
            self.weights = (alpha,) + (1.0,) * (n_bands - 1)
        else:
            if alpha != 1.0:
                raise ValueError(
                    "SpectralKD: give either alpha (weight of the low band) or explicit weights, not both "
                    f"(got alpha={alpha} and weights={tuple(weights)})"
                )
            w = tuple(float(x) for x in (weights.tolist() if isinstance(weights, torch.Tensor) else weights))
            if len(w) != n_bands:
                raise ValueError(
                    f"SpectralKD: {len(self.cutoffs)} cutoff(s) make {n_bands} bands, got {len(w)} weights"
                )
            if any(not math.isfinite(x) or x < 0 for x in w):
                raise ValueError(f"SpectralKD: weights must be finite and >= 0, got {w}")
            self.weights = w
        if reduction not in REDUCTIONS:
            raise ValueError(f"SpectralKD: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"SpectralKD: weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        eps = float(eps)
        if not math.isfinite(eps) or eps < 0 or (weighting == "adaptive" and eps == 0):
            raise ValueError(f"SpectralKD: eps must be finite and >= 0 (> 0 for adaptive weighting), got {eps}")
        self.reduction = reduction
        self.weighting = weighting
        self.eps = eps
        self.backend = backend

    def check_grid(self, H: int, W: int) -> None:
        """Raise ``ValueError`` if a band of ``cutoffs`` holds no frequency bin of an ``H x W`` grid, before any
        data reaches the loss (``forward`` checks the same on every call, cached per grid)."""
        check_bands(H, W, self.cutoffs, "SpectralKD")

    @property
    def band_names(self) -> list[str]:
        """``["low", "high"]`` for two bands, else ``["band0", "band1", ...]``."""
        n = len(self.cutoffs) + 1
        return ["low", "high"] if n == 2 else [f"band{i}" for i in range(n)]

    def _prepare(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_pair("SpectralKD", student, teacher)
        if student.dtype != teacher.dtype:
            dtype = torch.promote_types(student.dtype, teacher.dtype)
            student, teacher = student.to(dtype), teacher.to(dtype)
        return student, teacher

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Scalar loss between ``student`` and ``teacher`` (same shape ``(..., H, W)``)."""
        student, teacher = self._prepare(student, teacher)
        return spectral_loss(
            student,
            teacher,
            cutoffs=self.cutoffs,
            weights=self.weights,
            reduction=self.reduction,
            adaptive=self.weighting == "adaptive",
            eps=self.eps,
            backend=self.backend,
        )

    @torch.no_grad()
    def components(self, student: torch.Tensor, teacher: torch.Tensor) -> dict[str, torch.Tensor]:
        """Detached weighted per-band terms for logging; they sum to ``forward(student, teacher)``."""
        student, teacher = self._prepare(student, teacher)
        terms = spectral_band_terms(
            student,
            teacher,
            cutoffs=self.cutoffs,
            weights=self.weights,
            reduction=self.reduction,
            adaptive=self.weighting == "adaptive",
            eps=self.eps,
        )
        check_finite_loss("SpectralKD", terms, student=student, teacher=teacher)
        return {name: terms[i].to(student.dtype) for i, name in enumerate(self.band_names)}

    def extra_repr(self) -> str:
        cut = self.cutoffs[0] if len(self.cutoffs) == 1 else self.cutoffs
        return (
            f"cutoffs={cut}, weights={self.weights}, reduction={self.reduction!r}, "
            f"weighting={self.weighting!r}, eps={self.eps:g}, backend={self.backend!r}"
        )
