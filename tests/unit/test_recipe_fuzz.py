"""Property-based: whatever bytes a recipe file holds, loading it either succeeds or raises a
DeployKitError; never any other exception (a traceback on the user's screen)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploykit.errors import DeployKitError
from deploykit.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "recipes").glob("*.yaml"))]

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["", "nosuch", "../../etc/x", "a\x00b", "torch-cuda", "tensorrt", "x" * 300,
                     "prune", "quantize", "distill", "imagefolder", "/no/such/file.pt",
                     "baseline", "ptq-int8", "{timestamp}", "C:\\\\x"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)


def _paths(d: Any, pre: tuple = ()) -> list[tuple]:
    out = []
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else []
    for k, v in items:
        out.append((*pre, k))
        out += _paths(v, (*pre, k))
    return out


@st.composite
def mutated_recipes(draw: st.DrawFn) -> bytes:
    """A shipped recipe with one to three values replaced or keys added or deleted."""
    recipe = copy.deepcopy(draw(st.sampled_from(SHIPPED)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(recipe)
        path = draw(st.sampled_from(paths))
        parent = recipe
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(_values)
        else:
            parent[path[-1]] = draw(_values)
    text = yaml.safe_dump(recipe, allow_unicode=True)
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"])),
                       errors="replace")


_documents = st.one_of(
    mutated_recipes(),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(100, 3000).map(lambda n: (b"a: " + b"[" * n + b"]" * n)),   # deep nesting
    st.integers(100, 3000).map(lambda n: b"model: " + b"{a: " * n + b"1" + b"}" * n),
    st.integers(4400, 6000).map(lambda n: b"seed: " + b"9" * n),           # huge integers
    st.sampled_from([b"", b"# only a comment\n", b"---\n", b"[]", b"42", b"~", b"\xef\xbb\xbf",
                     b"!!python/object/apply:os.system [ls]", b"a: &x [*x]", b"a: !!binary AAAA"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(document=_documents)
def test_any_recipe_file_loads_or_raises_deploykit_error(document, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_bytes(document)
    try:
        load_recipe(path)
    except DeployKitError as e:
        assert str(e).strip(), "an error must say something"


@settings(max_examples=60, deadline=None)
@given(name=st.text(min_size=1, max_size=300))
def test_any_recipe_path_loads_or_raises_deploykit_error(name, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    with contextlib.suppress(DeployKitError):
        load_recipe(base / name)


@pytest.mark.parametrize("key", ["root", "checkpoint"])
def test_a_nul_byte_or_overlong_path_value_is_a_recipe_error(write_yaml, key):
    for bad in ("a\x00b", "x" * 5000):
        recipe = ({"data": {"kind": "imagefolder", "root": bad}} if key == "root"
                  else {"model": {"checkpoint": bad}})
        with pytest.raises(DeployKitError):
            load_recipe(write_yaml(recipe))


@pytest.mark.parametrize("value", ["a/../../../etc/x", "..", "has space", "-dash", ".hidden",
                                   "a" * 101, "ü"])
def test_unsafe_names_are_refused(write_yaml, value):
    with pytest.raises(DeployKitError, match="name"):
        load_recipe(write_yaml({"name": value, "data": {"kind": "digits"}}))


def _alias_bomb(levels: int, width: int, kind: str) -> str:
    """The fuzz benchmark's alias-bomb generator (one definition for both)."""
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "benchmarks/reliability/fuzz_recipes.py"
    spec = importlib.util.spec_from_file_location("fuzz_recipes", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.alias_bomb(levels, width, kind)


@pytest.mark.parametrize("kind", ["list", "map", "merge"])
def test_an_alias_bomb_is_refused_within_a_second(kind, tmp_path):
    """Nine levels of nine aliases expand to ~387 million values from a few hundred bytes:
    refused, naming the cause, before any value is built or walked."""
    import time

    path = tmp_path / f"laughs-{kind}.yaml"
    path.write_text(_alias_bomb(9, 9, kind))
    assert path.stat().st_size < 2000
    t0 = time.perf_counter()
    with pytest.raises(DeployKitError, match="aliases expanded the document holds over"):
        load_recipe(path, check_paths=False)
    assert time.perf_counter() - t0 < 1.0


def test_a_few_aliases_are_still_a_recipe(tmp_path):
    """Anchors for what a recipe repeats (a training schedule) are fine."""
    path = tmp_path / "anchors.yaml"
    path.write_text("model: {name: resnet20}\n"
                    "data: {kind: synthetic, image_size: 16}\n"
                    "train: &t {epochs: 1, lr: 0.01}\n"
                    "stages: [{kind: prune, target: {ratio: 0.5}, finetune: *t}]\n")
    assert load_recipe(path, check_paths=False).stages[0].finetune.epochs == 1
