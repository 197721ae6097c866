"""User-facing errors.

Every mistake a user can make (a bad recipe, a missing file, an unavailable backend) raises a
:class:`DeployKitError` subclass whose message names the file, the key and the fix. ``cli.main``
is the only place that turns them into exit codes; library callers catch them like any exception.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "CheckpointError",
    "DataError",
    "DeployKitError",
    "ModelError",
    "ParityError",
    "RecipeError",
    "ResourceError",
]


class DeployKitError(Exception):
    """A problem the user can fix. The CLI prints it without a traceback and exits 2."""

    exit_code = 2


class RecipeError(DeployKitError):
    """The recipe file is malformed, has unknown keys, wrong types or an invalid stage order."""


class DataError(DeployKitError):
    """The data set is missing, empty or does not match the model."""


class ModelError(DeployKitError):
    """The model cannot be built, or a named layer does not exist."""


class CheckpointError(DeployKitError):
    """A checkpoint is missing, corrupt or does not fit the model."""


class BackendUnavailableError(DeployKitError):
    """An optional runtime (TensorRT, onnxruntime-gpu, timm, CUDA) is not installed or present."""


class ParityError(DeployKitError):
    """An exported artifact disagrees numerically with its PyTorch source."""


class ResourceError(DeployKitError):
    """The run needs more memory than the machine or ``resources.max_memory_gb`` allows."""
