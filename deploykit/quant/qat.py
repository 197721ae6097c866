"""Quantization-aware fine-tuning through the fake-quant ops, with the float model as teacher."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from deploykit.data import Loaders
from deploykit.distill import kd_loss_fn
from deploykit.quant.prepare import QuantizedModel
from deploykit.recipe import QatSpec
from deploykit.train import FitResult, Objective, fit

__all__ = ["qat_finetune"]


def qat_finetune(qm: QuantizedModel, teacher: nn.Module, loaders: Loaders, q: QatSpec,
                 checkpoint_dir: Path | None = None, resume: bool = False,
                 objective: Objective | None = None) -> FitResult:
    """Fine-tune the calibrated ``qm`` through its fake-quant ops with ``teacher`` as KD target;
    BatchNorm statistics and ranges update for the first epochs, then stay frozen.
    ``objective``: the evaluator and metric the best epoch is picked by (default top-1)."""

    def on_epoch_start(epoch: int) -> None:
        qm.set_bn_frozen(epoch >= q.freeze_bn_after)
        qm.set_observers(epoch < q.freeze_observers_after)

    res = fit(qm, loaders.train, loaders.val, q, checkpoint_dir, resume,
              loss_fn=kd_loss_fn(teacher, q.kd_alpha, q.kd_temperature, q.label_smoothing),
              desc="qat", on_epoch_start=on_epoch_start, objective=objective)
    qm.set_bn_frozen(True)
    qm.set_observers(False)
    qm.eval()
    return res
