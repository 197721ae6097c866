"""What a classifier's forward returns: the logits, and in training mode maybe auxiliary ones.

torchvision's googlenet (``GoogLeNetOutputs``) and inception_v3 (``InceptionOutputs``) return a
named tuple whose first field is the main logits while training; timm's distilled ViTs return
``(head, head_dist)``. Training uses the main logits (plus, if asked, the auxiliary losses);
evaluation and export see the eval-mode graph, which returns the logits alone.
"""

from __future__ import annotations

from typing import Any

import torch

from deploykit.errors import ModelError

__all__ = ["split_outputs"]


def split_outputs(out: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(main logits, auxiliary logits)`` of a forward's output.

    Raises:
        ModelError: the output holds no tensor of logits.
    """
    if isinstance(out, torch.Tensor):
        return out, []
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0], [t for t in out[1:] if isinstance(t, torch.Tensor)]
    raise ModelError(f"the model's forward returned {type(out).__name__}, not logits: deploykit "
                     "trains classifiers whose forward returns a tensor (or a tuple whose first "
                     "item is the main logits); wrap the model so it returns the logits")
