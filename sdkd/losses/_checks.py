"""Input checks shared by the distillation losses: clear errors instead of silent wrong results."""

from __future__ import annotations

import torch

from ..ops._device_checks import assert_on_device


class MissingFeatureError(ValueError, KeyError):
    """A feature name is not among the features a model returned (a ``ValueError`` and a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def check_tensor(owner: str, name: str, x: object, min_dim: int = 2) -> torch.Tensor:
    """Return ``x`` if it is a floating-point tensor with at least ``min_dim`` dims, else raise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{owner}: {name} must be floating point, got {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{owner}: {name} needs at least {min_dim} dims, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{owner}: {name} is empty (shape {tuple(x.shape)})")
    return x


def check_pair(owner: str, student: object, teacher: object, *, same_shape: bool = True, min_dim: int = 2) -> None:
    """Check a (student, teacher) pair: tensors, same device, and (optionally) the same shape."""
    s = check_tensor(owner, "student", student, min_dim)
    t = check_tensor(owner, "teacher", teacher, min_dim)
    if s.device != t.device:
        raise ValueError(f"{owner}: student is on {s.device} but teacher is on {t.device}; move them to one device")
    if same_shape and s.shape != t.shape:
        raise ValueError(
            f"{owner}: student shape {tuple(s.shape)} does not match teacher shape {tuple(t.shape)}"
            " (use an adapter, e.g. FeatureMSE.from_shapes, when widths or sizes differ)"
        )


def check_module_device(owner: str, module: torch.nn.Module, x: torch.Tensor) -> None:
    """Raise if ``module``'s parameters live on another device than the input ``x``."""
    p = next(module.parameters(), None)
    if p is not None and p.device != x.device:
        raise ValueError(f"{owner}: adapter parameters are on {p.device} but the student is on {x.device}; call .to()")


def check_finite_loss(owner: str, loss: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
    """Return ``loss``, asserting on the device that it is finite (no host read on the success path).

    On the CPU a non-finite loss raises at once, naming the input that holds NaN/Inf; on CUDA and under
    torch.compile it is an asynchronous (device-side) assert naming none.
    """

    def diagnose() -> None:
        for name, x in inputs.items():
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{owner}: the {name} tensor contains NaN or Inf")
        raise FloatingPointError(f"{owner}: the loss is not finite although the inputs are (overflow?)")

    assert_on_device(torch.isfinite(loss), f"{owner}: the loss is not finite (NaN/Inf inputs?)", diagnose)
    return loss
