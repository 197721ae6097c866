"""Knowledge distillation: losses, feature taps, teachers, and the objective the stage trains.

Modules: :mod:`.losses` (pure loss functions and the margin of Heo et al.), :mod:`.taps`
(named intermediate features), :mod:`.teacher` (frozen teacher, ensemble, other resolution),
:mod:`.objective` (the recipe's weighted sum of terms, with its trainable adapters), :mod:`.kd`
(Hinton KD as a training-loop loss, used by quantization-aware training). A task's own terms
(a detector's, Chen et al. 2017) live with the task.
"""

from deploykit.distill.kd import hinton_kd, kd_loss_fn
from deploykit.distill.objective import DistillObjective, mixup
from deploykit.distill.taps import FeatureTaps, default_taps, last_bn, resolve_taps
from deploykit.distill.teacher import Teacher, freeze

__all__ = [
    "DistillObjective",
    "FeatureTaps",
    "Teacher",
    "default_taps",
    "freeze",
    "hinton_kd",
    "kd_loss_fn",
    "last_bn",
    "mixup",
    "resolve_taps",
]
