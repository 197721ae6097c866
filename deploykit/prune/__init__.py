"""Structured channel pruning (torch-pruning's DepGraph) and the pruned architecture as data."""

from deploykit.prune.history import HistoryRound, fix_pruned_attributes, replay_pruning
from deploykit.prune.opaque import layers_to_leave_whole, sealed_blocks, tp_tracing
from deploykit.prune.pruner import (
    check_traceable,
    explain_macs_miss,
    ignored_layer_names,
    macs_for_latency,
    make_pruner,
    prune_model,
    prune_to_macs,
)

__all__ = [
    "HistoryRound",
    "check_traceable",
    "explain_macs_miss",
    "fix_pruned_attributes",
    "ignored_layer_names",
    "layers_to_leave_whole",
    "macs_for_latency",
    "make_pruner",
    "prune_model",
    "prune_to_macs",
    "replay_pruning",
    "sealed_blocks",
    "tp_tracing",
]
