"""Quantization-aware fine-tuning through the fake-quant ops, with the float model as teacher."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from deploykit.data import Loaders
from deploykit.distill import kd_loss_fn
from deploykit.quant.prepare import QuantizedModel
from deploykit.recipe import QatSpec
from deploykit.train import FitResult, LossFn, Objective, fit

__all__ = ["qat_finetune"]


def qat_finetune(qm: QuantizedModel, teacher: nn.Module | None, loaders: Loaders, q: QatSpec,
                 checkpoint_dir: Path | None = None, resume: bool = False,
                 objective: Objective | None = None, *, model: nn.Module | None = None,
                 loss_fn: LossFn | None = None) -> FitResult:
    """Fine-tune the calibrated ``qm`` through its fake-quant ops; BatchNorm statistics and
    ranges update for the first epochs, then stay frozen.

    Args:
        teacher: the knowledge-distillation target (``q.kd_alpha`` weight on its term);
            ``None``: no teacher.
        objective: the loss, evaluator and metric the training reads (default top-1).
        model: what trains and is evaluated: a model computing through ``qm`` (default
            ``qm`` itself).
        loss_fn: the training loss, instead of the teacher's KD loss or the objective's.
    """

    def on_epoch_start(epoch: int) -> None:
        qm.set_bn_frozen(epoch >= q.freeze_bn_after)
        qm.set_observers(epoch < q.freeze_observers_after)

    if loss_fn is None and teacher is not None:
        loss_fn = kd_loss_fn(teacher, q.kd_alpha, q.kd_temperature, q.label_smoothing)
    trained = qm if model is None else model
    res = fit(trained, loaders.train, loaders.val, q, checkpoint_dir, resume, loss_fn=loss_fn,
              desc="qat", on_epoch_start=on_epoch_start, objective=objective)
    qm.set_bn_frozen(True)
    qm.set_observers(False)
    trained.eval()
    return res
