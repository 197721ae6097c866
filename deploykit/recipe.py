"""The typed recipe: one YAML file that chains a model through compression to a report.

Loading is strict: unknown keys, wrong types, missing paths and invalid stage orders are
:class:`~deploykit.errors.RecipeError` s naming the file, the key path (``stages[1].ratio``) and
the allowed values, raised before any long work starts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, model_validator

from deploykit import stage_specs  # noqa: F401  (registers every stage kind)
from deploykit.errors import RecipeError
from deploykit.gate_spec import GateSpec
from deploykit.spec_base import STAGE_SPECS, StageSpec, Strict, TrainSpec, register_stage_spec

__all__ = [
    "STAGE_ORDER_RULES",
    "STAGE_SPECS",
    "BenchSpec",
    "DataSpec",
    "ExportSpec",
    "ModelSpec",
    "OnnxExportSpec",
    "ParitySpec",
    "Recipe",
    "StageSpec",
    "TrainSpec",
    "load_recipe",
    "recipe_hash",
    "register_stage_spec",
]


class ModelSpec(Strict):
    """Which network to build.

    ``source``: ``builtin`` (CIFAR ResNets resnet20/32/56), ``torchvision`` (any classification
    model by name), ``timm`` (needs ``pip install "deploykit[timm]"``) or ``factory``
    (``name: "package.module:function"``, called as ``function(num_classes=N)``; this runs your
    code). ``checkpoint``: a state dict to load (``weights_only=True``); ``null`` trains a
    baseline with the ``train`` section.
    """

    source: Literal["builtin", "torchvision", "timm", "factory"] = "builtin"
    name: str = "resnet20"
    num_classes: int = Field(10, ge=2)
    checkpoint: Path | None = None


class DataSpec(Strict):
    """Where images come from.

    ``digits`` is scikit-learn's bundled 8x8 digits (no files needed), ``imagefolder`` reads
    ``root/train/<class>/*`` and ``root/val`` (or ``root/test``), ``synthetic`` makes random
    tensors for tests. ``cache`` decodes an image folder once into memory (fast epochs for
    small images such as CIFAR-10). ``limit_train``/``limit_val`` take a seeded subset.
    """

    kind: Literal["digits", "imagefolder", "synthetic"] = "digits"
    root: Path | None = None
    image_size: int = Field(32, ge=8)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    augment: bool = True
    cache: bool = True
    num_workers: int = Field(2, ge=0)
    limit_train: int | None = Field(None, ge=1)
    limit_val: int | None = Field(None, ge=1)
    calib_samples: int = Field(512, ge=1)
    synthetic_samples: int = Field(512, ge=8)

    @model_validator(mode="after")
    def _root_rules(self) -> DataSpec:
        if self.kind == "imagefolder" and self.root is None:
            raise ValueError("data.kind 'imagefolder' needs data.root: the folder holding train/")
        return self


class ParitySpec(Strict):
    """Thresholds for the exported-vs-PyTorch check that runs before any benchmark."""

    max_abs_error: float = Field(1e-3, gt=0)
    min_top1_agreement: float = Field(0.99, gt=0, le=1)
    real_batches: int = Field(2, ge=0)
    # Quantized artifacts differ from their PyTorch simulation by rounding (integer kernels
    # requantize with their own rounding) and FP16 by half-precision accumulation.
    # INT8: error relative to the largest reference logit, since it scales with the logits.
    fp16_max_abs_error: float = Field(5e-2, gt=0)
    int8_max_error_vs_range: float = Field(0.1, gt=0)
    int8_min_top1_agreement: float = Field(0.95, gt=0, le=1)

    def thresholds(self, precision: str) -> tuple[float, float, bool]:
        """``(error limit, min top-1 agreement, relative?)`` for an artifact of ``precision``."""
        if precision == "int8":
            return self.int8_max_error_vs_range, self.int8_min_top1_agreement, True
        if precision == "fp16":
            return self.fp16_max_abs_error, self.min_top1_agreement, False
        return self.max_abs_error, self.min_top1_agreement, False


class OnnxExportSpec(Strict):
    opset: int = Field(18, ge=17)
    dynamic_batch: bool = True
    parity: ParitySpec = ParitySpec()


class ExportSpec(Strict):
    onnx: OnnxExportSpec = OnnxExportSpec()


class BenchSpec(Strict):
    """What to measure: runtimes, batch sizes, CPU threads, repetitions, accuracy.

    GPU runtimes (``torch-cuda``, ``onnxruntime-cuda``, ``onnxruntime-tensorrt``,
    ``tensorrt``) need a GPU and ``pip install "deploykit[gpu]"`` / ``"deploykit[tensorrt]"``;
    each is checked against PyTorch on the CPU (parity) before it is timed.

    Timing stops once the 95% interval of every candidate's median is within
    ``target_rel_ci`` of it, or at ``max_iterations`` runs, or after ``time_budget_s``.
    """

    runtimes: list[Literal["torch-cpu", "onnxruntime-cpu", "torch-cuda", "onnxruntime-cuda",
                           "onnxruntime-tensorrt", "tensorrt"]] = ["torch-cpu", "onnxruntime-cpu"]
    batch_sizes: list[int] = [1, 64]
    threads: int = Field(2, ge=1)
    warmup: int = Field(10, ge=0)
    iterations: int = Field(50, ge=5, description="timed runs at least")
    target_rel_ci: float | None = Field(
        0.02, gt=0, lt=1, description="then repeat until the median's 95% interval is within "
        "+- this fraction of it (null: exactly `iterations`)")
    max_iterations: int = Field(400, ge=5)
    time_budget_s: float = Field(20.0, gt=0, description="per runtime and batch size")
    accuracy: bool = True

    @model_validator(mode="after")
    def _batches_positive(self) -> BenchSpec:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError("bench.batch_sizes must be a non-empty list of positive integers")
        return self


@dataclass(frozen=True)
class OrderRule:
    """``kind`` must come after at least one of ``after`` (if given) and, if ``last``, be last."""

    kind: str
    after: tuple[str, ...] = ()
    last: bool = False
    why: str = ""


STAGE_ORDER_RULES: tuple[OrderRule, ...] = (
    OrderRule("distill", after=("prune", "lowrank"),
              why="distillation recovers accuracy lost by a compression stage"),
    OrderRule("quantize", last=True,
              why="quantize produces the INT8 artifact; no float stage can follow it"),
)


class Recipe(Strict):
    """A whole run. See ``recipes/quickstart.yaml`` for a commented example."""

    name: str = "recipe"
    seed: int = 0
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    train: TrainSpec | None = TrainSpec()
    stages: list[SerializeAsAny[StageSpec]] = []
    export: ExportSpec = ExportSpec()
    bench: BenchSpec = BenchSpec()
    gates: GateSpec | None = None
    output: str = "runs/{recipe}-{timestamp}"


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the sub-model that ``loc`` points into (for 'unknown key' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)),
                       None)
    return sorted(getattr(current, "model_fields", {}))


def _format_errors(err: ValidationError, source: str, model: type[BaseModel],
                   prefix: tuple[Any, ...] = ()) -> str:
    lines = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, tuple(e["loc"]))
            msg = "unknown key" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
        lines.append(f"  {_key_path(loc)}: {msg}")
    return f"{source}: invalid recipe\n" + "\n".join(lines)


def _parse_stages(raw: Any, source: str) -> list[StageSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RecipeError(f"{source}: stages: expected a list of stages, got {type(raw).__name__}")
    known = ", ".join(sorted(STAGE_SPECS)) or "(none available)"
    stages = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or "kind" not in entry:
            raise RecipeError(f"{source}: stages[{i}]: each stage is a mapping with a 'kind' "
                              f"key; kinds: {known}")
        spec_cls = STAGE_SPECS.get(entry["kind"])
        if spec_cls is None:
            raise RecipeError(f"{source}: stages[{i}].kind: unknown stage {entry['kind']!r}; "
                              f"choose one of: {known}")
        try:
            stages.append(spec_cls.model_validate(entry))
        except ValidationError as e:
            raise RecipeError(_format_errors(e, source, spec_cls, ("stages", i))) from None
    return stages


def check_stage_order(kinds: list[str], source: str = "recipe") -> None:
    """Apply :data:`STAGE_ORDER_RULES` to a list of stage kinds; raise RecipeError on a breach."""
    for i, kind in enumerate(kinds):
        for rule in STAGE_ORDER_RULES:
            if rule.kind != kind:
                continue
            if rule.after and not any(k in rule.after for k in kinds[:i]):
                raise RecipeError(
                    f"{source}: stages[{i}].kind: {kind!r} must come after one of "
                    f"{', '.join(rule.after)} ({rule.why}); reorder the stages or remove it")
            if rule.last and i != len(kinds) - 1:
                raise RecipeError(
                    f"{source}: stages[{i}].kind: {kind!r} must be the last stage ({rule.why}); "
                    f"move stages[{i + 1}:] before it")


def _check_paths(recipe: Recipe, source: str) -> None:
    data = recipe.data
    root = data.root
    if data.kind == "imagefolder" and root is not None:
        if not root.is_dir():
            raise RecipeError(
                f"{source}: data.root: folder {str(root)!r} does not exist (resolved to "
                f"{root.resolve()}; relative paths are taken from the current directory). "
                "Point data.root at a folder holding train/<class>/ images, or use kind: digits")
        if not (root / "train").is_dir():
            raise RecipeError(f"{source}: data.root: {root} has no train/ folder; expected "
                              "root/train/<class>/*.jpg and root/val (or root/test)")
    ckpt = recipe.model.checkpoint
    if ckpt is not None and not ckpt.is_file():
        raise RecipeError(f"{source}: model.checkpoint: file {str(ckpt)!r} does not exist "
                          f"(resolved to {ckpt.resolve()}); fix the path or set it to null "
                          "to train a baseline")
    for i, stage in enumerate(recipe.stages):
        for j, path in enumerate(getattr(getattr(stage, "teacher", None), "checkpoints", [])):
            if not path.is_file():
                raise RecipeError(f"{source}: stages[{i}].teacher.checkpoints[{j}]: file "
                                  f"{str(path)!r} does not exist (resolved to {path.resolve()}); "
                                  "fix the path, or remove it to distil from the baseline")
    gates = recipe.gates
    if gates is not None and gates.baseline is not None and not gates.baseline.is_file():
        raise RecipeError(f"{source}: gates.baseline: report {str(gates.baseline)!r} does not "
                          "exist; point it at an earlier run's report.json or remove the key")
    if ckpt is None and recipe.train is None:
        raise RecipeError(f"{source}: model.checkpoint is null and train is null: give a "
                          "checkpoint or a train section so there is a baseline to compress")


def parse_recipe(raw: Any, source: str = "recipe", check_paths: bool = True) -> Recipe:
    """Validate an already-loaded mapping into a :class:`Recipe`.

    Raises:
        RecipeError: naming ``source``, the key path and the allowed values.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping of sections "
                          f"(model, data, train, stages, export, bench, output), "
                          f"got {type(raw).__name__}")
    raw = dict(raw)
    stages = _parse_stages(raw.pop("stages", None), source)
    try:
        recipe = Recipe.model_validate({**raw, "stages": stages})
    except ValidationError as e:
        raise RecipeError(_format_errors(e, source, Recipe)) from None
    check_stage_order([s.kind for s in recipe.stages], source)
    if check_paths:
        _check_paths(recipe, source)
    return recipe


def load_recipe(path: str | Path, check_paths: bool = True) -> Recipe:
    """Read a YAML recipe with ``yaml.safe_load`` and validate it.

    Args:
        path: the recipe file.
        check_paths: also check that data folders and checkpoints exist.

    Returns:
        The validated recipe; ``name`` defaults to the file's stem.

    Raises:
        RecipeError: the file is missing, is not YAML, or fails validation.

    Example:
        >>> recipe = load_recipe("recipes/quickstart.yaml")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found (resolved to {path.resolve()})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if isinstance(raw, dict) and "name" not in raw:
        raw = {"name": path.stem, **raw}
    return parse_recipe(raw, str(path), check_paths)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """A JSON-ready dict of the resolved recipe (defaults filled in)."""
    return recipe.model_dump(mode="json")


def recipe_hash(recipe: Recipe) -> str:
    """SHA-256 of the resolved recipe, so a report says exactly what produced it."""
    blob = json.dumps(recipe_to_dict(recipe), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()
