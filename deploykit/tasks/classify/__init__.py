"""Image classification: the recipe's ``task: classification`` (the default;
:class:`.task.ClassifyTask`). Importing this package imports nothing else."""

__all__: list[str] = []
