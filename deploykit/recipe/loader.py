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
from pydantic import BaseModel, SerializeAsAny, ValidationError

from deploykit.errors import RecipeError
from deploykit.recipe.base import StageSpec, Strict, TrainSpec
from deploykit.recipe.gates import GateSpec
from deploykit.recipe.sections import BenchSpec, DataSpec, ExportSpec, ModelSpec, ResourcesSpec
from deploykit.recipe.stages import STAGE_KINDS

__all__ = [
    "Recipe",
    "check_stage_order",
    "load_recipe",
    "parse_recipe",
    "recipe_hash",
    "recipe_to_dict",
    "recipe_to_yaml",
]


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
    resources: ResourcesSpec = ResourcesSpec()
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


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe (defaults filled in) as YAML: what ``deploykit inspect`` prints."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)


def recipe_hash(recipe: Recipe) -> str:
    """SHA-256 of the resolved recipe, so a report says exactly what produced it."""
    blob = json.dumps(recipe_to_dict(recipe), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()
