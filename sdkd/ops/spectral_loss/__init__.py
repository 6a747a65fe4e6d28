"""Frequency-band distillation loss (SpectralKD, DESIGN.md section 5) and its backends.

``definition``: input checks, band geometry and the plain-PyTorch reference (the definition of correctness);
``plan``: the DFT box, tables, gains and each backend's internal path; ``fft_path``: the torch.fft path;
``native``: the compiled cpu/cuda kernels' glue; ``fused``: loss + gradient in one pass and its autograd;
``op``: the backends' probes, their registration and the public ``spectral_loss``.
"""

from .definition import (
    REDUCTIONS,
    band_bin_counts,
    band_energies_reference,
    band_index,
    band_terms_reference,
    check_finite,
    hermitian_weights,
    normalize_args,
    spectral_loss_reference,
)
from .fused import spectral_loss_fused, spectral_loss_fwd
from .op import spectral_band_terms, spectral_loss, spectral_loss_backend, spectral_loss_op
from .plan import MAX_KERNEL_BANDS, DftPlan, band_map, box_macs, dft_plan, dft_tables

__all__ = [
    "MAX_KERNEL_BANDS",
    "REDUCTIONS",
    "DftPlan",
    "band_bin_counts",
    "band_energies_reference",
    "band_index",
    "band_map",
    "band_terms_reference",
    "box_macs",
    "check_finite",
    "dft_plan",
    "dft_tables",
    "hermitian_weights",
    "normalize_args",
    "spectral_band_terms",
    "spectral_loss",
    "spectral_loss_backend",
    "spectral_loss_fused",
    "spectral_loss_fwd",
    "spectral_loss_op",
    "spectral_loss_reference",
]
