"""The typed recipe: its schema (one module per part) and the strict YAML loader.

Example:
    >>> from deploykit.recipe import load_recipe
    >>> recipe = load_recipe("recipes/quickstart.yaml")  # doctest: +SKIP
"""

from deploykit.recipe.base import StageSpec, Strict, TrainSpec
from deploykit.recipe.gates import GateSpec, LatencyAt, MetricAt
from deploykit.recipe.loader import (
    ARTIFACT_SECTIONS,
    Recipe,
    check_stage_order,
    load_recipe,
    parse_recipe,
    recipe_hash,
    recipe_to_dict,
    recipe_to_yaml,
)
from deploykit.recipe.runtimes import (
    RUNTIME_TABLE,
    RUNTIMES,
    Runtime,
    RuntimeInfo,
    legacy_runtime_name,
    runtime_info,
)
from deploykit.recipe.sections import (
    BenchSpec,
    DataSpec,
    DetectionsSpec,
    ExportSpec,
    GpuBenchSpec,
    ModelSpec,
    OnnxExportSpec,
    ParitySpec,
    ResourcesSpec,
)
from deploykit.recipe.stages import (
    STAGE_KINDS,
    CalibrationSpec,
    DistillSpec,
    LossWeights,
    LowRankSpec,
    PruneSpec,
    PruneTarget,
    QatSpec,
    QuantizeSpec,
    RankSpec,
    SensitivitySpec,
    SparsitySpec,
    SpeedCheckSpec,
    StageKind,
    TeacherSpec,
)

__all__ = [
    "ARTIFACT_SECTIONS",
    "RUNTIMES",
    "RUNTIME_TABLE",
    "STAGE_KINDS",
    "BenchSpec",
    "CalibrationSpec",
    "DataSpec",
    "DetectionsSpec",
    "DistillSpec",
    "ExportSpec",
    "GateSpec",
    "GpuBenchSpec",
    "LatencyAt",
    "LossWeights",
    "LowRankSpec",
    "MetricAt",
    "ModelSpec",
    "OnnxExportSpec",
    "ParitySpec",
    "PruneSpec",
    "PruneTarget",
    "QatSpec",
    "QuantizeSpec",
    "RankSpec",
    "Recipe",
    "ResourcesSpec",
    "Runtime",
    "RuntimeInfo",
    "SensitivitySpec",
    "SparsitySpec",
    "SpeedCheckSpec",
    "StageKind",
    "StageSpec",
    "Strict",
    "TeacherSpec",
    "TrainSpec",
    "check_stage_order",
    "legacy_runtime_name",
    "load_recipe",
    "parse_recipe",
    "recipe_hash",
    "recipe_to_dict",
    "recipe_to_yaml",
    "runtime_info",
]
