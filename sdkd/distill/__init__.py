"""Single- and multi-teacher distillation (DESIGN.md section 6) and the teacher cache.

``Distiller`` wraps a student, frozen teachers, the task loss and the KD loss and returns the
total loss of a batch for the strategies ``single``, ``aver``, ``a2d`` and ``camkd``;
``TeacherCache`` stores the teachers' outputs over the training set once.
"""

from .cache import IndexedDataset, TeacherCache
from .distiller import Distiller, DistillOutput
from .strategies import GRAD_SPACES, STRATEGIES, a2d_output_weights, a2d_solve, camkd_weights, per_sample_loss

__all__ = [
    "GRAD_SPACES",
    "STRATEGIES",
    "DistillOutput",
    "Distiller",
    "IndexedDataset",
    "TeacherCache",
    "a2d_output_weights",
    "a2d_solve",
    "camkd_weights",
    "per_sample_loss",
]
