"""``FeatureAdapter``: map a student feature to the teacher's width and size before a feature loss.

Spatial size first: adaptive average pooling when the student map is at least as large as the
teacher's in both dims, bilinear interpolation otherwise (as CA-MKD resizes, REFERENCES 4.2).
Then a 1x1 conv without bias (He-normal, fan-out) and optional BatchNorm (weight 1, bias 0), the
connector of AB distillation (REFERENCES 4.3).

Time, for 5-D features ``(B, T, C, H, W)``:
- ``time_fold="batch"``: frames are folded into the batch, one connector shared by all frames
  (``Cs -> Ct``); student and teacher must have the same number of frames;
- ``time_fold="channels"``: frames are folded into channels (``Ts*Cs -> Tt*Ct``, frame-major as
  ``x.reshape(B, T*C, H, W)``), so the frame counts may differ.
The output always has the teacher's layout: ``(B, Ct, Ht, Wt)`` or ``(B, Tt, Ct, Ht, Wt)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_module_device, check_tensor

TIME_FOLDS = ("batch", "channels")
Shape = Sequence[int]


def resize_feature(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` to ``size``: adaptive avg-pool when shrinking both dims, else bilinear."""
    H, W = x.shape[-2:]
    Ht, Wt = int(size[0]), int(size[1])
    if (H, W) == (Ht, Wt):
        return x
    if H >= Ht and W >= Wt:
        return F.adaptive_avg_pool2d(x, (Ht, Wt))
    return F.interpolate(x, size=(Ht, Wt), mode="bilinear", align_corners=False)


def _shape_of(x: Shape | torch.Tensor, name: str) -> tuple[int, ...]:
    shape = tuple(int(v) for v in (x.shape if isinstance(x, torch.Tensor) else x))
    if len(shape) not in (4, 5) or any(v <= 0 for v in shape):
        raise ValueError(f"{name} must be (B, C, H, W) or (B, T, C, H, W) with positive sizes, got {shape}")
    return shape


class FeatureAdapter(nn.Module):
    """Resize + 1x1 conv (+ BN) connector from a student feature to the teacher's layout (see module doc).

    Args:
        student_channels, teacher_channels: channel counts ``Cs`` and ``Ct`` (per frame for 5-D features).
        bn: add BatchNorm after the conv.
        project: use the 1x1 conv; ``None`` means only when the (folded) widths differ.
        time_fold: ``"batch"`` or ``"channels"``, how 5-D features are folded.
        student_frames, teacher_frames: frame counts, required with ``time_fold="channels"``.
        size: default teacher spatial size ``(Ht, Wt)``; ``forward(x, size=...)`` overrides it.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        *,
        bn: bool = True,
        project: bool | None = None,
        time_fold: str = "batch",
        student_frames: int | None = None,
        teacher_frames: int | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if int(student_channels) <= 0 or int(teacher_channels) <= 0:
            raise ValueError(f"FeatureAdapter: channels must be positive, got {student_channels}, {teacher_channels}")
        if time_fold not in TIME_FOLDS:
            raise ValueError(f"FeatureAdapter: time_fold must be one of {TIME_FOLDS}, got {time_fold!r}")
        if time_fold == "channels":
            if student_frames is None or teacher_frames is None:
                raise ValueError("FeatureAdapter: time_fold='channels' needs student_frames and teacher_frames")
            in_ch, out_ch = int(student_frames) * int(student_channels), int(teacher_frames) * int(teacher_channels)
        else:
            if student_frames is not None and teacher_frames is not None and student_frames != teacher_frames:
                raise ValueError(
                    f"FeatureAdapter: time_fold='batch' needs equal frame counts, got student_frames={student_frames}"
                    f" and teacher_frames={teacher_frames}; use time_fold='channels'"
                )
            in_ch, out_ch = int(student_channels), int(teacher_channels)
        if project is None:
            project = in_ch != out_ch
        if not project and in_ch != out_ch:
            raise ValueError(f"FeatureAdapter: project=False but the widths differ ({in_ch} -> {out_ch})")
        self.student_channels, self.teacher_channels = int(student_channels), int(teacher_channels)
        self.student_frames = None if student_frames is None else int(student_frames)
        self.teacher_frames = None if teacher_frames is None else int(teacher_frames)
        self.time_fold = time_fold
        self.in_channels, self.out_channels = in_ch, out_ch
        self.size = None if size is None else (int(size[0]), int(size[1]))
        if project:
            conv = nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # std sqrt(2 / (k^2 C_out))
            self.proj = nn.Sequential(conv, nn.BatchNorm2d(out_ch)) if bn else conv
        else:
            self.proj = nn.Identity()

    @classmethod
    def from_shapes(
        cls, student_shape: Shape | torch.Tensor, teacher_shape: Shape | torch.Tensor, **kwargs
    ) -> FeatureAdapter:
        """Build from example shapes (batch dim included; tensors are accepted too). For 5-D shapes,
        ``time_fold`` defaults to ``"batch"`` when the frame counts match and ``"channels"`` otherwise."""
        s, t = _shape_of(student_shape, "student_shape"), _shape_of(teacher_shape, "teacher_shape")
        if len(s) != len(t):
            raise ValueError(f"FeatureAdapter: student_shape {s} and teacher_shape {t} have different ranks")
        if len(s) == 5:
            kwargs.setdefault("time_fold", "batch" if s[1] == t[1] else "channels")
            kwargs.setdefault("student_frames", s[1])
            kwargs.setdefault("teacher_frames", t[1])
        kwargs.setdefault("size", t[-2:])
        return cls(s[-3], t[-3], **kwargs)

    def output_shape(self, student_shape: Shape) -> tuple[int, ...]:
        """Shape of ``forward`` for a student of ``student_shape`` (with the default ``size``)."""
        s = _shape_of(student_shape, "student_shape")
        hw = self.size or s[-2:]
        if len(s) == 4:
            return (s[0], self.teacher_channels, *hw)
        frames = self.teacher_frames if self.time_fold == "channels" else s[1]
        return (s[0], frames, self.teacher_channels, *hw)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Map ``x`` (student feature, 4-D or 5-D) to the teacher's layout, spatial size ``size``."""
        check_tensor("FeatureAdapter", "student feature", x, min_dim=4)
        check_module_device("FeatureAdapter", self, x)
        size = tuple(size) if size is not None else self.size
        if x.dim() == 5:
            B, T, C = x.shape[:3]
            if self.student_frames is not None and T != self.student_frames:
                raise ValueError(f"FeatureAdapter: student feature has {T} frames, expected {self.student_frames}")
            if self.time_fold == "batch":
                y, out_lead = x.reshape(B * T, C, *x.shape[-2:]), (B, T)
            else:
                y, out_lead = x.reshape(B, T * C, *x.shape[-2:]), (B, self.teacher_frames)
        elif x.dim() == 4:
            if self.time_fold == "channels":
                raise ValueError(
                    f"FeatureAdapter: time_fold='channels' expects 5-D (B, T, C, H, W), got {tuple(x.shape)}"
                )
            y, out_lead = x, (x.shape[0],)
        else:
            raise ValueError(f"FeatureAdapter: student feature must be 4-D or 5-D, got shape {tuple(x.shape)}")
        if y.shape[1] != self.in_channels:
            raise ValueError(
                f"FeatureAdapter: student feature {tuple(x.shape)} has {y.shape[1]} (folded) channels, "
                f"expected {self.in_channels}"
            )
        if size is not None:
            y = resize_feature(y, size)
        y = self.proj(y)
        return y.reshape(*out_lead, self.teacher_channels, *y.shape[-2:])

    def extra_repr(self) -> str:
        return (
            f"student_channels={self.student_channels}, teacher_channels={self.teacher_channels}, "
            f"time_fold={self.time_fold!r}, size={self.size}"
        )
