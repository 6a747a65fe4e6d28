"""Hot ops: plain-PyTorch references plus fast backends behind one dispatcher each."""

from ._dispatch import BackendUnavailableError, registered_ops
from .spectral_loss import spectral_band_terms, spectral_loss


def available_backends() -> dict[str, dict[str, list[str]]]:
    """``{op: {backend: reasons}}``; an empty reason list means the backend is usable here."""
    return {name: op.availability() for name, op in registered_ops().items()}


__all__ = ["BackendUnavailableError", "available_backends", "spectral_band_terms", "spectral_loss"]
