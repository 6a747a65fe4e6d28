"""Distillation losses: ``SpectralKD`` (frequency bands), ``FeatureMSE``, ``ABLoss``, ``BranchSpectralKD`` and
``AttentionTransfer`` (features), ``FeatureKD`` (several named feature pairs; ``FEATURE_LOSSES`` names the
feature losses) and the ``FeatureAdapter`` connector."""

from ._checks import MissingFeatureError
from .ab import ABLoss, ab_loss
from .adapters import FeatureAdapter, resize_feature
from .attention_transfer import AttentionTransfer, attention_map
from .branch_spectral import BranchSpectralKD, assemble_bands
from .feature import AdaptedFeatureLoss, FeatureMSE
from .feature_kd import FEATURE_LOSSES, FeatureKD, build_feature_loss
from .spectral import SpectralKD

__all__ = [
    "ABLoss",
    "AdaptedFeatureLoss",
    "AttentionTransfer",
    "BranchSpectralKD",
    "FEATURE_LOSSES",
    "FeatureAdapter",
    "FeatureKD",
    "FeatureMSE",
    "MissingFeatureError",
    "SpectralKD",
    "ab_loss",
    "assemble_bands",
    "attention_map",
    "build_feature_loss",
    "resize_feature",
]
