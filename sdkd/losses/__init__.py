"""Distillation losses: ``SpectralKD`` (frequency bands), ``FeatureMSE`` and ``ABLoss`` (adapted features),
``FeatureKD`` (several named feature pairs) and the ``FeatureAdapter`` connector."""

from ._checks import MissingFeatureError
from .ab import ABLoss, ab_loss
from .adapters import FeatureAdapter, resize_feature
from .feature import AdaptedFeatureLoss, FeatureMSE
from .feature_kd import FeatureKD
from .spectral import SpectralKD

__all__ = [
    "ABLoss",
    "AdaptedFeatureLoss",
    "FeatureAdapter",
    "FeatureKD",
    "FeatureMSE",
    "MissingFeatureError",
    "SpectralKD",
    "ab_loss",
    "resize_feature",
]
