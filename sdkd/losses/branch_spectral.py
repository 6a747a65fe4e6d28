"""``BranchSpectralKD``: latent SpectralKD with each frequency band distilled from its own teacher branch.

ST-AlterNet's evolution blocks split the latent into a high-frequency conv branch
(``block{i}.high``) and a low-frequency attention branch (``block{i}.low``). The paper's
frequency-aligned distillation (section 3.4.1, eq. 10) aligns the student's latent with the
teacher's high- and low-frequency features; here the low band of the adapted student feature is
matched to the low band of the ``.low`` tap and the high band to the high band of the ``.high``
tap. This is SpectralKD against one assembled target ``t = sum_b P_b(tap_b)``, ``P_b`` keeping
band ``b`` of ``rfft2`` (the same radial bands as :class:`SpectralKD`): the bands are orthogonal
projections that sum to the identity, so band ``b`` of ``s - t`` is exactly
``P_b(s) - P_b(tap_b)`` and every SpectralKD option (band weights, reductions, adaptive
weighting against the teacher's band energy) keeps its meaning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..ops.spectral_loss import band_index
from .adapters import FeatureAdapter
from .feature import AdaptedFeatureLoss
from .spectral import SpectralKD


def assemble_bands(taps: Sequence[torch.Tensor], cutoffs: Sequence[float]) -> torch.Tensor:
    """``sum_b P_b(taps[b])``: band ``b`` (of ``len(cutoffs) + 1`` radial bands) taken from ``taps[b]``."""
    if len(taps) != len(cutoffs) + 1:
        raise ValueError(
            f"assemble_bands: {len(cutoffs)} cutoff(s) make {len(cutoffs) + 1} bands, got {len(taps)} taps"
        )
    H, W = taps[0].shape[-2:]
    dtype = torch.promote_types(taps[0].dtype, torch.float32)
    idx = band_index(H, W, cutoffs, device=taps[0].device)
    spec = None
    for b, tap in enumerate(taps):
        part = torch.fft.rfft2(tap.to(dtype)) * (idx == b)
        spec = part if spec is None else spec + part
    return torch.fft.irfft2(spec, s=(H, W)).to(taps[0].dtype)


class BranchSpectralKD(AdaptedFeatureLoss):
    """SpectralKD between an adapted student feature and a target assembled band by band from teacher taps.

    ``forward(student, {"low": t_low, "high": t_high})``: the band names are the SpectralKD's
    ``band_names`` (``low``/``high`` for one cutoff, ``band0``, ``band1``, ... for more); every
    tap has the same shape. Build with :meth:`from_shapes`.
    """

    def __init__(self, adapter: nn.Module, spectral: SpectralKD) -> None:
        super().__init__(adapter, spectral)
        self.bands = tuple(spectral.band_names)

    @classmethod
    def from_shapes(
        cls,
        student_shape: Sequence[int] | torch.Tensor,
        teacher_shapes: Mapping[str, Sequence[int] | torch.Tensor],
        adapter_kwargs: Mapping | None = None,
        **spectral_kwargs,
    ) -> BranchSpectralKD:
        """Build from an example student shape and ``{band: teacher tap shape}`` (batch dims included)."""
        spectral = SpectralKD(**spectral_kwargs)
        shapes = {b: tuple(s.shape) if isinstance(s, torch.Tensor) else tuple(s) for b, s in teacher_shapes.items()}
        cls._check_bands(spectral.band_names, shapes)
        adapter = FeatureAdapter.from_shapes(student_shape, next(iter(shapes.values())), **dict(adapter_kwargs or {}))
        return cls(adapter, spectral)

    @staticmethod
    def _check_bands(bands: Sequence[str], taps: Mapping[str, object]) -> None:
        if set(taps) != set(bands):
            raise ValueError(
                f"BranchSpectralKD: give one teacher tap per band {list(bands)}, got {sorted(taps)}"
                " (e.g. {low: block0.low, high: block0.high})"
            )
        shapes = {b: tuple(t.shape) if isinstance(t, torch.Tensor) else tuple(t) for b, t in taps.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"BranchSpectralKD: the band taps must have one shape, got {shapes}")

    def target(self, teacher: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The assembled teacher target (band ``b`` from ``teacher[b]``)."""
        if not isinstance(teacher, Mapping):
            raise TypeError(
                f"BranchSpectralKD: the teacher must be {{band: tensor}} for bands {list(self.bands)},"
                f" got {type(teacher).__name__}"
            )
        self._check_bands(self.bands, teacher)
        return assemble_bands([teacher[b] for b in self.bands], self.criterion.cutoffs)

    def forward(self, student: torch.Tensor, teacher: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return super().forward(student, self.target(teacher))

    def per_sample(self, student: torch.Tensor, teacher: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return super().per_sample(student, self.target(teacher))


__all__ = ["BranchSpectralKD", "assemble_bands"]
