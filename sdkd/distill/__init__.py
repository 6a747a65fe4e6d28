"""Single- and multi-teacher distillation (DESIGN.md section 6) and the teacher cache.

``Distiller`` wraps a student, frozen teachers, the task loss and the KD loss and returns the
total loss of a batch for the strategies ``single``, ``aver``, ``a2d`` and ``camkd``;
``TeacherCache`` stores the teachers' outputs over the training set once. Features are tapped from any
``nn.Module`` by module path (``forward_with_features``, forward hooks) or from the built-in models'
``forward(x, return_features=True)``.
"""

from .cache import IndexedDataset, TeacherCache
from .distiller import Distiller, DistillOutput
from .strategies import GRAD_SPACES, STRATEGIES, a2d_output_weights, a2d_solve, camkd_weights, per_sample_loss
from .taps import forward_with_features

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
    "forward_with_features",
    "per_sample_loss",
]
