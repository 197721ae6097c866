"""Models: building them from a recipe, checkpoints, cost (MACs, params, size), the CIFAR nets.

Restoring a *compressed* checkpoint (replaying its pruning or factorisation) needs the
technique packages, so it lives one layer up, in :func:`deploykit.tasks.restore.load_model`.
"""

from deploykit.models.build import BUILTIN_MODELS, build_model, parse_model_ref
from deploykit.models.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_pretrained,
    load_weights,
    make_checkpoint,
)
from deploykit.models.cost import count_macs_params, file_size_bytes
from deploykit.models.layers import (
    check_forward,
    compute_layers_in_order,
    find_first_last,
    layer_widths,
)
from deploykit.models.outputs import split_outputs
from deploykit.models.summary import ModelSummary, summarize_model

__all__ = [
    "BUILTIN_MODELS",
    "CHECKPOINT_FORMAT",
    "ModelSummary",
    "build_model",
    "check_forward",
    "compute_layers_in_order",
    "count_macs_params",
    "file_size_bytes",
    "find_first_last",
    "layer_widths",
    "load_checkpoint",
    "load_pretrained",
    "load_weights",
    "make_checkpoint",
    "parse_model_ref",
    "split_outputs",
    "summarize_model",
]
