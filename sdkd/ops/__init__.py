"""Hot ops: plain-PyTorch references plus fast backends behind one dispatcher each."""

from ._dispatch import BackendUnavailableError, registered_ops
from .attention import attention
from .capped_simplex import a2d_weights, capped_simplex_projection
from .spectral_loss import spectral_band_terms, spectral_loss


def available_backends() -> dict[str, dict[str, list[str]]]:
    """``{op: {backend: reasons}}``; an empty reason list means the backend is usable here."""
    return {name: op.availability() for name, op in registered_ops().items()}


__all__ = [
    "BackendUnavailableError",
    "a2d_weights",
    "attention",
    "available_backends",
    "capped_simplex_projection",
    "spectral_band_terms",
    "spectral_loss",
]
