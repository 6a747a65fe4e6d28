"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017): match spatial attention maps of features.

The attention map of a feature ``A`` of shape ``(B, C, H, W)`` is the channel-wise mean of
``|A_c|^p`` (``p = 2``), flattened over ``H*W`` and L2-normalised per sample:
``q = vec(mean_c |A_c|^p) / ||vec(mean_c |A_c|^p)||_2`` (the mean instead of the paper's sum
changes nothing after the normalisation). The loss between a student and a teacher feature is
the squared distance of their maps, ``||q_s - q_t||_2^2`` per sample:

- ``reduction="batchmean"`` (default): the per-sample squared distances averaged over the batch,
  in ``[0, 4]`` whatever the feature size, so one ``feature_lam`` suits every tap point;
- ``reduction="mean"``: the authors' code, ``(q_s - q_t).pow(2).mean()`` over samples and
  positions (``batchmean / (H*W)``; they scale it by ``beta = 1000``).

Only the spatial layout is compared, so the channel counts may differ and no projection is
learned. Size mismatch is adapted on the map: the student's power map is resized to the
teacher's ``(H, W)`` before normalising (:func:`resize_feature`: area pooling when shrinking,
bilinear otherwise). 5-D features ``(B, T, C, H, W)`` give one map per frame (frames folded into
the batch; the frame counts must match). The paper (section 4.3) credits the low-frequency
alignment to transferring the teacher's attention; ``distill.feature_loss: at`` on the
teacher's ``block{i}.low`` tap (``Z + MHSA(Z)``) is that transfer (README "Design decisions").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_pair
from .adapters import resize_feature

AT_REDUCTIONS = ("batchmean", "mean")


def attention_map(feature: torch.Tensor, p: float = 2.0, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Normalised spatial attention map ``(N, H*W)`` of a ``(N, C, H, W)`` feature (see module doc);
    ``size`` resizes the power map ``(N, 1, H, W)`` before flattening and normalising."""
    power = feature.abs().pow(p).mean(dim=1, keepdim=True)
    if size is not None:
        power = resize_feature(power, size)
    return F.normalize(power.flatten(1), dim=1)


def _check_shapes(owner: str, student: Sequence[int], teacher: Sequence[int]) -> None:
    """Shapes that attention maps can compare: same rank (4-D or 5-D), batch and frame counts."""
    if len(student) != len(teacher) or len(student) not in (4, 5):
        raise ValueError(
            f"{owner}: student feature {tuple(student)} and teacher feature {tuple(teacher)}"
            " must both be 4-D (B, C, H, W) or both 5-D (B, T, C, H, W)"
        )
    if len(student) == 5 and student[1] != teacher[1]:
        raise ValueError(
            f"{owner}: student has {student[1]} frames but teacher {teacher[1]}; attention maps are"
            " compared frame by frame, so tap features with equal frame counts (or 4-D features)"
        )


class AttentionTransfer(nn.Module):
    """Attention-transfer loss between a student and a teacher feature (see module doc).

    Args:
        p: power of the channel-wise attention map (2 in the paper's experiments).
        reduction: ``"batchmean"`` (default, size-independent) or ``"mean"`` (the authors' code).

    The teacher is used as given (pass it computed under ``torch.no_grad()``); there are no
    parameters, so :meth:`from_shapes` only checks that the two shapes can be compared.
    """

    def __init__(self, p: float = 2.0, reduction: str = "batchmean") -> None:
        super().__init__()
        p = float(p)
        if not p > 0 or p == float("inf"):
            raise ValueError(f"AttentionTransfer: p must be finite and > 0, got {p}")
        if reduction not in AT_REDUCTIONS:
            raise ValueError(f"AttentionTransfer: reduction must be one of {AT_REDUCTIONS}, got {reduction!r}")
        self.p, self.reduction = p, reduction

    @classmethod
    def from_shapes(
        cls,
        student_shape: Sequence[int] | torch.Tensor,
        teacher_shape: Sequence[int] | torch.Tensor,
        *,
        p: float = 2.0,
        reduction: str = "batchmean",
    ) -> AttentionTransfer:
        """Build for features of these example shapes (batch dim included) or tensors; the shapes are
        checked as ``forward`` would (same rank, 4-D or 5-D, equal frame counts)."""
        s, t = (tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(x) for x in (student_shape, teacher_shape))
        _check_shapes(cls.__name__, s, t)
        return cls(p=p, reduction=reduction)

    def per_sample(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Loss of each sample, ``(B,)``; its mean is ``forward(student, teacher)``."""
        owner = type(self).__name__
        check_pair(owner, student, teacher, same_shape=False, min_dim=4)
        _check_shapes(owner, student.shape, teacher.shape)
        if student.shape[0] != teacher.shape[0]:
            raise ValueError(f"{owner}: batch sizes differ, {student.shape[0]} vs {teacher.shape[0]}")
        frames = student.shape[1] if student.dim() == 5 else 1
        s, t = (x.flatten(0, 1) if x.dim() == 5 else x for x in (student, teacher))
        dtype = torch.promote_types(torch.promote_types(s.dtype, t.dtype), torch.float32)  # bf16 maps lose digits
        qs = attention_map(s.to(dtype), self.p, size=tuple(t.shape[-2:]))
        qt = attention_map(t.to(dtype), self.p)
        per_map = (qs - qt).square().sum(1)
        if self.reduction == "mean":
            per_map = per_map / qt.shape[1]
        return per_map.reshape(student.shape[0], frames).mean(1).to(torch.promote_types(student.dtype, teacher.dtype))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Scalar loss: the per-sample losses averaged over the batch (no host read: NaN inputs give a
        NaN loss, which the :class:`~sdkd.distill.Distiller` reports by term name)."""
        return self.per_sample(student, teacher).mean()

    def extra_repr(self) -> str:
        return f"p={self.p:g}, reduction={self.reduction!r}"
