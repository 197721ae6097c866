"""Loading the typed recipe: one YAML file that chains a model through compression to a report.

Loading is strict: unknown keys, wrong types, missing paths and invalid stage orders are
:class:`~deploykit.errors.RecipeError` s naming the file, the key path (``stages[1].ratio``) and
the allowed values, raised before any long work starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from deploykit.errors import RecipeError
from deploykit.recipe.base import StageSpec, Strict, TrainSpec
from deploykit.recipe.gates import GateSpec
from deploykit.recipe.paths import check_paths_exist, folder_class_count
from deploykit.recipe.reading import (
    check_structure,
    key_path,
    read_yaml_mapping,
    safe_name,
    shown_path,
)
from deploykit.recipe.runtimes import runtime_info
from deploykit.recipe.sections import BenchSpec, DataSpec, ExportSpec, ModelSpec, ResourcesSpec
from deploykit.recipe.stages import STAGE_KINDS, candidate_names, stage_candidates
from deploykit.recipe.task_names import task_names, task_problems
from deploykit.recipe.tune import TuneSpec

__all__ = [
    "ARTIFACT_SECTIONS",
    "Recipe",
    "check_stage_order",
    "load_recipe",
    "parse_recipe",
    "recipe_hash",
    "recipe_to_dict",
    "recipe_to_yaml",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class Recipe(Strict):
    """A whole run. See ``recipes/quickstart.yaml`` for a commented example."""

    name: str = Field("recipe", pattern=NAME_PATTERN, description="names the run folder: "
                      "letters, digits, '.', '_' and '-', starting with a letter or digit")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    task: str = Field("classification", description="classification, detection, or a task "
                      "registered with deploykit.tasks.register_task")
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    train: TrainSpec | None = TrainSpec()
    stages: list[SerializeAsAny[StageSpec]] = []
    export: ExportSpec = ExportSpec()
    bench: BenchSpec = BenchSpec()
    gates: GateSpec | None = None
    resources: ResourcesSpec = ResourcesSpec()
    tune: TuneSpec | None = Field(None, description="what deploykit tune searches")
    output: str = "runs/{recipe}-{timestamp}"

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in task_names():
            raise ValueError(f"unknown task {v!r}; available: {', '.join(task_names())}")
        return v

    @field_validator("output")
    @classmethod
    def _output_stays_put(cls, v: str) -> str:
        if ".." in Path(v).parts or "\x00" in v:
            raise ValueError(f"{v!r} may not contain '..' (or a NUL byte); to write a run "
                             "elsewhere, pass --output DIR on the command line")
        return v

    @model_validator(mode="after")
    def _weights_are_trained_from(self) -> Recipe:
        if self.model.weights is not None and self.train is None:
            raise ValueError("model.weights is where the baseline training starts, but train "
                             "is null; add a train section (a few epochs fine-tune), or give "
                             "the finished model as model.checkpoint instead")
        return self

    @model_validator(mode="after")
    def _sections_fit_the_task(self) -> Recipe:
        """The tasks share the sections but not every setting: the task's own checks say what
        in the recipe it cannot run."""
        problems = task_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _gates_match_the_run(self) -> Recipe:
        """The gates can only check what the run produces and measures: say so now, not after
        the training."""
        g = self.gates
        if g is None:
            return self
        names = candidate_names(self.stages)
        if g.candidate is not None and g.candidate not in names:
            raise ValueError(f"gates.candidate {g.candidate!r} is not a candidate of this "
                             f"recipe; its stages produce: {', '.join(names)}")
        for key in ("min_speedup", "min_speedup_over_previous", "max_latency_ms",
                    "max_latency_regression"):
            at = getattr(g, key)
            if at is None:
                continue
            if at.runtime not in self.bench.runtimes:
                raise ValueError(f"gates.{key}.runtime {at.runtime!r} is not measured: add it "
                                 f"to bench.runtimes ({', '.join(self.bench.runtimes)})")
            if at.batch is not None and at.batch not in self.bench.batch_sizes:
                raise ValueError(f"gates.{key}.batch {at.batch} is not measured: add it to "
                                 f"bench.batch_sizes ({self.bench.batch_sizes})")
        if g.min_speedup_over_previous is not None and len(names) < 2:
            raise ValueError("gates.min_speedup_over_previous needs a candidate before the "
                             "gated one; this recipe has no stages")
        gated = g.candidate or names[-1]
        int8 = _int8_candidates(self.stages)
        for key in ("min_speedup", "min_speedup_over_previous", "max_latency_ms"):
            at = getattr(g, key)
            if at is not None and gated in int8 and not runtime_info(at.runtime).int8_native:
                raise ValueError(f"gates.{key}.runtime {at.runtime}: the gated candidate "
                                 f"{gated!r} is INT8, and {at.runtime} runs INT8 as its float "
                                 "fake-quant simulation, whose latency is not reported; gate "
                                 "it on a runtime with INT8 kernels (onnxruntime-cpu, tensorrt)")
        if gated == "baseline" and g.min_speedup is not None and g.min_speedup.value > 1:
            why = "this recipe has no stages" if len(names) < 2 else "gates.candidate: baseline"
            raise ValueError(f"gates.min_speedup {g.min_speedup.value}: the gated candidate is "
                             f"the baseline ({why}), whose speed-up over itself is 1.0x, so "
                             "the gate could never pass; add a stage, or gate another "
                             "candidate")
        return self


def _int8_candidates(stages: list[StageSpec]) -> set[str]:
    """The names of the INT8 candidates the stages produce (each quantize stage's last)."""
    names, int8 = ["baseline"], set()
    for spec in stages:
        new = stage_candidates(spec, names[-1])
        names += new
        if spec.kind == "quantize":
            int8.add(new[-1])
    return int8


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
    fields = getattr(current, "model_fields", {})
    return sorted(f.alias or name for name, f in fields.items())   # as a recipe spells them


def _format_errors(err: ValidationError, source: str, model: type[BaseModel],
                   prefix: tuple[Any, ...] = ()) -> str:
    lines = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        msg = e["msg"]
        if e["type"] == "value_error" and "error" in e.get("ctx", {}):
            msg = str(e["ctx"]["error"])   # our own validators' messages name key and fix
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, tuple(e["loc"]))
            msg = "unknown key" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
        lines.append(f"  {key_path(loc)}: {msg}")
    return f"{source}: invalid recipe\n" + "\n".join(lines)


def _parse_stages(raw: Any, source: str) -> list[StageSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RecipeError(f"{source}: stages: expected a list of stages, got {type(raw).__name__}")
    known = ", ".join(sorted(STAGE_KINDS))
    stages = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or "kind" not in entry:
            raise RecipeError(f"{source}: stages[{i}]: each stage is a mapping with a 'kind' "
                              f"key; kinds: {known}")
        kind = STAGE_KINDS.get(entry["kind"]) if isinstance(entry["kind"], str) else None
        if kind is None:
            raise RecipeError(f"{source}: stages[{i}].kind: unknown stage {entry['kind']!r}; "
                              f"choose one of: {known}")
        try:
            stages.append(kind.spec.model_validate(entry))
        except ValidationError as e:
            raise RecipeError(_format_errors(e, source, kind.spec, ("stages", i))) from None
    return stages


def check_stage_order(kinds: list[str], source: str = "recipe") -> None:
    """Apply each kind's placement rule (:data:`STAGE_KINDS`); raise RecipeError on a breach."""
    for i, kind in enumerate(kinds):
        rule = STAGE_KINDS[kind]
        if rule.after and not any(k in rule.after for k in kinds[:i]):
            raise RecipeError(
                f"{source}: stages[{i}].kind: {kind!r} must come after one of "
                f"{', '.join(rule.after)} ({rule.why}); reorder the stages or remove it")
        if rule.last and i != len(kinds) - 1:
            raise RecipeError(
                f"{source}: stages[{i}].kind: {kind!r} must be the last stage ({rule.why}); "
                f"move stages[{i + 1}:] before it")


def parse_recipe(raw: Any, source: str = "recipe", check_paths: bool = True) -> Recipe:
    """Validate an already-loaded mapping into a :class:`Recipe`.

    Raises:
        RecipeError: naming ``source``, the key path and the allowed values.
    """
    if raw is None or raw == {}:
        raise RecipeError(f"{source}: the recipe is empty; a recipe names at least its model and "
                          "data (copy recipes/quickstart.yaml and edit it)")
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping of sections "
                          f"(model, data, train, stages, export, bench, output), "
                          f"got {type(raw).__name__}")
    check_structure(raw, source)
    raw = dict(raw)
    stages = _parse_stages(raw.pop("stages", None), source)
    try:
        recipe = Recipe.model_validate({**raw, "stages": stages})
    except ValidationError as e:
        raise RecipeError(_format_errors(e, source, Recipe)) from None
    check_stage_order([s.kind for s in recipe.stages], source)
    if (recipe.data.kind == "imagefolder" and "num_classes" not in recipe.model.model_fields_set
            and (n := folder_class_count(recipe.data.root)) is not None):
        # the user's image folder says how many classes the model has
        recipe = recipe.model_copy(update={"model": recipe.model.model_copy(
            update={"num_classes": n})})
    if check_paths:
        try:
            check_paths_exist(recipe, source)
        except (OSError, ValueError) as e:   # a NUL byte, a name too long for the system
            raise RecipeError(f"{source}: a path in the recipe cannot be used ({e}); check "
                              "data.root, model.checkpoint, teacher checkpoints and "
                              "gates.baseline") from None
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
    raw = read_yaml_mapping(path)
    if isinstance(raw, dict) and "name" not in raw:
        raw = {"name": safe_name(path.stem), **raw}
    return parse_recipe(raw, shown_path(path), check_paths)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """A JSON-ready dict of the resolved recipe (defaults filled in)."""
    return recipe.model_dump(mode="json", by_alias=True)


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe (defaults filled in) as YAML: what ``deploykit inspect`` prints."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)


def recipe_hash(recipe: Recipe, sections: tuple[str, ...] | None = None) -> str:
    """SHA-256 of the resolved recipe (or of its ``sections`` only), so a report says exactly
    what produced it."""
    data = recipe_to_dict(recipe)
    if sections is not None:
        data = {k: data[k] for k in sections}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


ARTIFACT_SECTIONS = ("name", "seed", "model", "data", "train", "stages", "export")
"""The sections that determine a run's checkpoints and artifacts: ``--resume`` continues a
folder only with the same values (``bench``, ``gates``, ``resources`` and ``output`` may
change between the interrupted run and its resumption)."""
