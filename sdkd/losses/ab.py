"""Activation-boundary distillation loss (Heo et al., AAAI 2019; DESIGN.md section 5, REFERENCES 4.3).

``l = 1[t > 0] relu(mu - s~)^2 + 1[t <= 0] relu(mu + s~)^2`` on pre-activation features, margin
``mu = 1``, ``s~`` the student feature through a connector: 1x1 conv without bias (He-normal,
``std = sqrt(2 / C_out)``) + BatchNorm (weight 1, bias 0), plus resizing when the sizes differ.

Reduction: ``"mean"`` (default) averages over all elements, so the scale does not depend on the
feature size and one KD weight ``lambda`` suits FeatureMSE, SpectralKD and ABLoss alike;
``"batchmean"`` is the original code's sum over all elements / batch size (which the authors then
scale by about 3/1000); ``"sum"`` is the plain sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..ops._device_checks import assert_on_device
from .adapters import FeatureAdapter
from .feature import AdaptedFeatureLoss, make_adapter

AB_REDUCTIONS = ("mean", "batchmean", "sum")


def ab_loss(student: torch.Tensor, teacher: torch.Tensor, margin: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """AB loss between an already-connected student feature and the teacher's pre-activation feature."""
    if reduction not in AB_REDUCTIONS:
        raise ValueError(f"ab_loss: reduction must be one of {AB_REDUCTIONS}, got {reduction!r}")
    if student.shape != teacher.shape:
        raise ValueError(f"ab_loss: student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}")
    pos = teacher > 0
    per_elem = torch.where(pos, F.relu(margin - student).square(), F.relu(margin + student).square())
    if reduction == "mean":
        return per_elem.mean()
    if reduction == "batchmean":
        return per_elem.sum() / student.shape[0]
    return per_elem.sum()


class ABLoss(AdaptedFeatureLoss):
    """AB loss with its own conv+BN connector from the student width to the teacher's (see module doc).

    ``ABLoss(Cs, Ct, margin=1.0, reduction="mean", **adapter_kwargs)`` or
    ``ABLoss.from_shapes(s.shape, t.shape, ...)``. The connector always projects, even at equal
    widths. No gradient reaches the teacher (it enters only through the sign mask).
    """

    def __init__(
        self,
        student_channels: int | None = None,
        teacher_channels: int | None = None,
        *,
        margin: float = 1.0,
        reduction: str = "mean",
        adapter: nn.Module | None = None,
        **adapter_kwargs,
    ) -> None:
        if reduction not in AB_REDUCTIONS:
            raise ValueError(f"ABLoss: reduction must be one of {AB_REDUCTIONS}, got {reduction!r}")
        margin = float(margin)
        if not margin > 0 or margin == float("inf"):
            raise ValueError(f"ABLoss: margin must be finite and > 0, got {margin}")
        if adapter is None:
            adapter_kwargs.setdefault("project", True)
        adapter = make_adapter("ABLoss", student_channels, teacher_channels, adapter, adapter_kwargs)
        super().__init__(adapter, partial(ab_loss, margin=margin, reduction=reduction))
        self.margin, self.reduction = margin, reduction

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        # the teacher enters only through ``t > 0``, where NaN would silently count as inactive
        if isinstance(teacher, torch.Tensor) and teacher.numel():  # asserted on the device: no host read

            def diagnose() -> None:
                raise ValueError("ABLoss: the teacher tensor contains NaN or Inf")

            assert_on_device(torch.isfinite(teacher), "ABLoss: the teacher tensor contains NaN or Inf", diagnose)
        return super().forward(student, teacher)

    @classmethod
    def from_shapes(
        cls,
        student_shape: Sequence[int] | torch.Tensor,
        teacher_shape: Sequence[int] | torch.Tensor,
        *,
        margin: float = 1.0,
        reduction: str = "mean",
        **adapter_kwargs,
    ) -> ABLoss:
        """Build from example feature shapes (batch dim included) or tensors."""
        adapter_kwargs.setdefault("project", True)
        adapter = FeatureAdapter.from_shapes(student_shape, teacher_shape, **adapter_kwargs)
        return cls(margin=margin, reduction=reduction, adapter=adapter)

    def extra_repr(self) -> str:
        return f"margin={self.margin:g}, reduction={self.reduction!r}"
