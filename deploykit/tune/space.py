"""The search space of ``deploykit tune``: the recipe's ``tune.space`` entries resolved to
places in the recipe, checked against the recipe's own schema, sampled through an Optuna
trial, and applied to give each trial's plain recipe.

A key path names a stage by kind (``prune.target.macs_ratio``: the recipe's only prune stage),
by position (``stages[2].train.epochs``) or a top-level section (``train.epochs``). Each choice
and each end of each range is applied alone to the recipe and validated as a recipe, so an
unknown key or a value outside a key's limits is an error naming the key before any work.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.errors import RecipeError
from deploykit.recipe import Recipe, parse_recipe, recipe_to_dict
from deploykit.recipe.tune import RangeSpec

__all__ = ["Dimension", "SearchSpace", "config_hash"]

_STAGE_INDEX = re.compile(r"^stages\[(\d+)\]$")
_SECTIONS = ("model", "data", "train", "export", "bench")
_SCALAR = (bool, int, float, str, type(None))


def config_hash(params: dict[str, Any]) -> str:
    """A short stable hash of a trial's parameter values (its identity in the study)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Dimension:
    """One searched key: where it sits in the recipe, and its choices or range."""

    key: str
    path: tuple[str | int, ...]
    choices: tuple[Any, ...] | None = None
    range: RangeSpec | None = None

    def suggest(self, trial: Any) -> Any:
        """The value ``trial`` (an Optuna trial) proposes for this key."""
        if self.range is not None:
            r = self.range
            if r.integer:
                return trial.suggest_int(self.key, int(r.low), int(r.high),
                                         step=int(r.step or 1), log=r.log)
            return trial.suggest_float(self.key, float(r.low), float(r.high),
                                       step=None if r.step is None else float(r.step), log=r.log)
        assert self.choices is not None
        if all(isinstance(c, _SCALAR) for c in self.choices):
            return trial.suggest_categorical(self.key, list(self.choices))
        # lists (e.g. keep_float) cannot be Optuna choices: sample their index
        return self.choices[trial.suggest_categorical(f"{self.key}#", list(
            range(len(self.choices))))]

    def ends(self) -> list[Any]:
        """The values to check against the schema: every choice, or both ends."""
        if self.range is not None:
            return [self.range.low, self.range.high]
        return list(self.choices or ())


def _resolve(data: dict[str, Any], key: str) -> tuple[str | int, ...]:
    parts = key.split(".")
    if len(parts) < 2:
        raise ValueError("a key path has a section and a field, e.g. prune.target.macs_ratio")
    head, rest = parts[0], parts[1:]
    stages = data.get("stages") or []
    m = _STAGE_INDEX.match(head)
    if m:
        i = int(m.group(1))
        if i >= len(stages):
            raise ValueError(f"the recipe has {len(stages)} stage(s); stages[{i}] is not one")
        return ("stages", i, *rest)
    kinds = [i for i, st in enumerate(stages) if st.get("kind") == head]
    if len(kinds) == 1:
        return ("stages", kinds[0], *rest)
    if len(kinds) > 1:
        raise ValueError(f"the recipe has {len(kinds)} {head} stages; name one as "
                         f"stages[{kinds[0]}].{'.'.join(rest)}")
    if head in _SECTIONS:
        return (head, *rest)
    known = sorted({st.get("kind") for st in stages} | set(_SECTIONS))
    raise ValueError(f"{head!r} is neither a stage of this recipe nor a section; start the "
                     f"key with one of: {', '.join(known)}, or stages[i]")


def _set(data: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    node: Any = data
    for p in path[:-1]:
        nxt = node[p] if isinstance(p, int) else node.get(p)
        if nxt is None:              # an optional section left out (e.g. prune.finetune)
            nxt = {}
            node[p] = nxt
        node = nxt
    node[path[-1]] = copy.deepcopy(value)


class SearchSpace:
    """The resolved ``tune.space`` of one recipe (see the module notes)."""

    def __init__(self, recipe: Recipe, dims: list[Dimension], source: str) -> None:
        self.recipe, self.dims, self.source = recipe, dims, source
        base = recipe_to_dict(recipe)
        base["tune"] = None
        self._base = base

    @classmethod
    def from_recipe(cls, recipe: Recipe, source: str) -> SearchSpace:
        """Resolve and check ``recipe.tune.space``.

        Raises:
            RecipeError: no ``tune`` section, a key that names nothing, or a value the
                recipe's schema refuses there (each names ``tune.space.<key>``).
        """
        if recipe.tune is None:
            raise RecipeError(f"{source}: no tune: section; add one naming the keys to "
                              "search, e.g. tune: {space: {prune.target.macs_ratio: {low: 0.3, "
                              "high: 0.9}}}")
        data = recipe_to_dict(recipe)
        data["tune"] = None
        dims = []
        for key, spec in recipe.tune.space.items():
            try:
                path = _resolve(data, key)
            except ValueError as e:
                raise RecipeError(f"{source}: tune.space.{key}: {e}") from None
            if isinstance(spec, RangeSpec):
                dims.append(Dimension(key, path, range=spec))
            else:
                dims.append(Dimension(key, path, choices=tuple(spec)))
        space = cls(recipe, dims, source)
        for d in dims:
            for value in d.ends():
                try:
                    space.apply({d.key: value}, check=True)
                except RecipeError as e:
                    detail = str(e).split(": invalid recipe", 1)[-1].strip()
                    raise RecipeError(f"{source}: tune.space.{d.key}: the value {value!r} does "
                                      f"not fit the recipe there: {detail}") from None
        return space

    def suggest(self, trial: Any) -> dict[str, Any]:
        """One value per key, as ``trial`` proposes them."""
        return {d.key: d.suggest(trial) for d in self.dims}

    def apply(self, params: dict[str, Any], check: bool = True) -> Recipe:
        """The base recipe with ``params`` set (and no tune section), validated.

        Raises:
            RecipeError: the schema refuses a value.
        """
        data = copy.deepcopy(self._base)
        by_key = {d.key: d for d in self.dims}
        for key, value in params.items():
            _set(data, by_key[key].path, value)
        return parse_recipe(data, self.source, check_paths=check)

    def trial_recipe(self, params: dict[str, Any], checkpoint: Path | None, name: str
                     ) -> Recipe:
        """What a trial runs: ``params`` applied, named ``name``, starting from the shared
        baseline ``checkpoint`` (no baseline training) when there is one."""
        data = self.apply(params).model_dump(mode="json", by_alias=True)
        data["name"] = name
        if checkpoint is not None:
            data["model"]["checkpoint"] = str(checkpoint)
            data["train"] = None
        return parse_recipe(data, self.source)
