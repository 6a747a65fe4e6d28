"""Feature losses on adapted student features: ``AdaptedFeatureLoss`` and ``FeatureMSE`` (FitNets-style hints).

The student feature goes through a :class:`FeatureAdapter` (resize + 1x1 conv + BN) into the
teacher's layout, then a criterion compares it with the teacher feature. As ``F.mse_loss``, the
loss does not detach the teacher: pass teacher features computed under ``torch.no_grad()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_finite_loss, check_pair
from .adapters import FeatureAdapter


class AdaptedFeatureLoss(nn.Module):
    """``criterion(adapter(student, size=teacher's H, W), teacher)`` with shape, device and NaN checks."""

    def __init__(self, adapter: nn.Module, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.adapter = adapter
        self.criterion = criterion

    @property
    def _owner(self) -> str:
        return type(self).__name__

    def adapt(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapted student and teacher, same shape and dtype (promoted when the dtypes differ)."""
        check_pair(self._owner, student, teacher, same_shape=False, min_dim=4)
        if student.dim() != teacher.dim():
            raise ValueError(
                f"{self._owner}: student feature {tuple(student.shape)} and teacher feature {tuple(teacher.shape)}"
                " must both be 4-D (B, C, H, W) or both 5-D (B, T, C, H, W)"
            )
        s = self.adapter(student, size=tuple(teacher.shape[-2:]))
        if s.shape != teacher.shape:
            raise ValueError(
                f"{self._owner}: adapted student feature {tuple(s.shape)} (from {tuple(student.shape)}) does not match"
                f" teacher feature {tuple(teacher.shape)}"
            )
        if s.dtype != teacher.dtype:
            dtype = torch.promote_types(s.dtype, teacher.dtype)
            s, teacher = s.to(dtype), teacher.to(dtype)
        return s, teacher

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        s, t = self.adapt(student, teacher)
        return check_finite_loss(self._owner, self.criterion(s, t), student=student, teacher=teacher)

    def per_sample(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Loss of each sample, ``(B,)`` (per-sample strategies such as CA-MKD). The whole batch goes
        through the adapter at once (BatchNorm sees the batch, as in ``forward``); the criterion is then
        evaluated per sample, so the mean over samples is ``forward`` for mean-reduced criteria."""
        s, t = self.adapt(student, teacher)
        if self.criterion is F.mse_loss:
            return F.mse_loss(s, t, reduction="none").flatten(1).mean(1)
        return torch.stack([self.criterion(s[i : i + 1], t[i : i + 1]).reshape(()) for i in range(s.shape[0])])


class FeatureMSE(AdaptedFeatureLoss):
    """Mean squared error between the adapted student feature and the teacher feature.

    ``FeatureMSE(Cs, Ct, **adapter_kwargs)`` or, clearer, ``FeatureMSE.from_shapes(s.shape, t.shape)``;
    ``adapter_kwargs`` go to :class:`FeatureAdapter` (``bn``, ``project``, ``time_fold``, frames, ``size``).
    With equal widths and sizes the adapter is the identity unless ``project=True``.
    """

    def __init__(
        self,
        student_channels: int | None = None,
        teacher_channels: int | None = None,
        *,
        adapter: nn.Module | None = None,
        **adapter_kwargs,
    ) -> None:
        super().__init__(
            make_adapter("FeatureMSE", student_channels, teacher_channels, adapter, adapter_kwargs), F.mse_loss
        )

    @classmethod
    def from_shapes(
        cls, student_shape: Sequence[int] | torch.Tensor, teacher_shape: Sequence[int] | torch.Tensor, **adapter_kwargs
    ) -> FeatureMSE:
        """Build from example feature shapes (batch dim included) or tensors."""
        return cls(adapter=FeatureAdapter.from_shapes(student_shape, teacher_shape, **adapter_kwargs))


def make_adapter(
    owner: str, student_channels: int | None, teacher_channels: int | None, adapter: nn.Module | None, kwargs: dict
) -> nn.Module:
    """The given ``adapter``, or a :class:`FeatureAdapter` built from the channel counts (exactly one of the two)."""
    if adapter is not None:
        if student_channels is not None or teacher_channels is not None or kwargs:
            raise ValueError(f"{owner}: pass either adapter= or the channel counts and adapter options, not both")
        return adapter
    if student_channels is None or teacher_channels is None:
        raise ValueError(f"{owner}: needs student_channels and teacher_channels (or use {owner}.from_shapes)")
    return FeatureAdapter(student_channels, teacher_channels, **kwargs)
