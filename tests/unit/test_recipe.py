from __future__ import annotations

from pathlib import Path

import pytest

from deploykit.errors import RecipeError
from deploykit.recipe import (
    STAGE_KINDS,
    Recipe,
    check_stage_order,
    load_recipe,
    parse_recipe,
    recipe_hash,
)

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_recipe_loads_with_defaults():
    r = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    assert r.name == "quickstart"
    assert r.model.name == "resnet20" and r.data.kind == "digits"
    assert r.bench.batch_sizes == [1, 64]


def test_unknown_key_names_file_path_and_allowed_keys(write_yaml):
    p = write_yaml({"data": {"kind": "digits", "batchsize": 32}})
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    msg = str(e.value)
    assert str(p) in msg
    assert "data.batchsize: unknown key" in msg
    assert "batch_size" in msg  # the allowed keys are listed


def test_unknown_top_level_section(write_yaml):
    with pytest.raises(RecipeError, match=r"stagse: unknown key; allowed keys here: .*stages"):
        load_recipe(write_yaml({"stagse": []}))


def test_wrong_type_and_literal_values_are_explained():
    with pytest.raises(RecipeError, match=r"train\.epochs: .*integer"):
        parse_recipe({"train": {"epochs": "many"}}, check_paths=False)
    with pytest.raises(RecipeError, match=r"train\.optimizer: .*'sgd' or 'adamw'"):
        parse_recipe({"train": {"optimizer": "lion"}}, check_paths=False)
    with pytest.raises(RecipeError, match=r"bench\.runtimes\[1\]"):
        parse_recipe({"bench": {"runtimes": ["torch-cpu", "tensorflow"]}}, check_paths=False)


def test_unknown_stage_kind_lists_known_kinds():
    with pytest.raises(RecipeError, match=r"stages\[0\]\.kind: unknown stage 'prnue'"):
        parse_recipe({"stages": [{"kind": "prnue"}]}, check_paths=False)
    with pytest.raises(RecipeError, match=r"stages\[0\]: each stage is a mapping"):
        parse_recipe({"stages": ["prune"]}, check_paths=False)


def test_stage_order_rules_are_data_and_enforced():
    kinds = {k for k, rule in STAGE_KINDS.items() if rule.after or rule.last}
    assert {"distill", "quantize"} <= kinds
    check_stage_order(["prune", "distill", "quantize"])
    with pytest.raises(RecipeError, match=r"stages\[0\]\.kind: 'quantize' must be the last"):
        check_stage_order(["quantize", "prune"])
    with pytest.raises(RecipeError, match=r"stages\[0\]\.kind: 'distill' must come after"):
        check_stage_order(["distill", "prune"])


def test_missing_data_root_names_key_and_resolved_path(write_yaml, tmp_path):
    p = write_yaml({"data": {"kind": "imagefolder", "root": str(tmp_path / "nope")}})
    with pytest.raises(RecipeError, match=r"data\.root: folder .*nope.* does not exist"):
        load_recipe(p)


def test_imagefolder_needs_root():
    with pytest.raises(RecipeError, match=r"needs data\.root"):
        parse_recipe({"data": {"kind": "imagefolder"}}, check_paths=False)


def test_missing_checkpoint_and_nothing_to_train(write_yaml, tmp_path):
    with pytest.raises(RecipeError, match=r"model\.checkpoint: file .* does not exist"):
        load_recipe(write_yaml({"model": {"checkpoint": str(tmp_path / "x.pt")}}))
    with pytest.raises(RecipeError, match="give a checkpoint or a train section"):
        load_recipe(write_yaml({"train": None}))


def test_not_yaml_and_not_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed", encoding="utf-8")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="a recipe is a YAML mapping"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_yaml_tags_that_run_code_are_rejected(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hi']\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(p)


def test_recipe_hash_changes_with_content():
    a = Recipe()
    b = parse_recipe({"seed": 1}, check_paths=False)
    assert recipe_hash(a) == recipe_hash(Recipe())
    assert recipe_hash(a) != recipe_hash(b)


def test_gates_section_shorthand_unknown_key_and_missing_baseline(write_yaml, tmp_path):
    r = parse_recipe({"stages": [{"kind": "quantize"}],
                      "gates": {"min_speedup": 1.5, "max_latency_ms": {"value": 3, "batch": 1}}},
                     check_paths=False)
    assert r.gates.min_speedup.value == 1.5 and r.gates.min_speedup.runtime == "onnxruntime-cpu"
    assert r.gates.min_speedup.batch is None and r.gates.max_latency_ms.percentile == "p50"
    with pytest.raises(RecipeError, match=r"gates.max_acc"):
        parse_recipe({"gates": {"max_acc": 1}}, check_paths=False)
    with pytest.raises(RecipeError, match=r"gates.baseline.*does not exist"):
        load_recipe(write_yaml({"gates": {"baseline": str(tmp_path / "old.json")}}))


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_recipe_loads_and_its_stages_check(path):
    from deploykit.stages import get_stage
    from deploykit.tasks import TaskModel, get_task

    r = load_recipe(path, check_paths=False)
    task = get_task(r.task)
    built = task.build_model(r.model_copy(update={"model": r.model.model_copy(
        update={"checkpoint": None, "weights": None})}))   # files the user brings
    assert task.check_recipe(r) == []
    task.check_model(TaskModel(built.model, built.first_last, built.input_shape), r, None)
    for spec in r.stages:
        stage = get_stage(spec.kind)
        if hasattr(stage, "check"):
            stage.check(built.model, spec, built.first_last, None, task)


def test_an_inspected_recipe_loads_back_to_the_same_recipe(tmp_path):
    """inspect prints keys as a recipe spells them (prune's 'global', sparsity's 'lambda')."""
    import yaml

    from deploykit.recipe import parse_recipe, recipe_to_yaml

    raw = {"name": "r", "model": {"name": "resnet20"}, "data": {"kind": "digits"},
           "stages": [{"kind": "prune", "importance": "bn_scale", "global": True,
                       "target": {"macs_ratio": 0.5},
                       "sparsity": {"lambda": 1e-3, "epochs": 1}}]}
    recipe = parse_recipe(raw, "r.yaml")
    text = recipe_to_yaml(recipe)
    assert "global: true" in text and "lambda: 0.001" in text
    assert parse_recipe(yaml.safe_load(text), "printed.yaml") == recipe


def test_weights_without_training_are_refused_whatever_the_path_checks():
    raw = {"model": {"name": "resnet20", "weights": "w.pt"}, "data": {"kind": "digits"},
           "train": None}
    with pytest.raises(RecipeError, match=r"model\.weights is where the baseline training "
                                          r"starts, but train is null"):
        parse_recipe(raw, "r.yaml", check_paths=False)


def test_num_classes_comes_from_the_image_folder_unless_given(tmp_path):
    """An image folder of 3 classes makes a 3-class model without a num_classes key; a value
    the user gives is kept (the data loader then checks it against the folder)."""
    for split in ("train", "val"):
        for name in ("cat", "dog", "fox", ".cache"):
            (tmp_path / split / name).mkdir(parents=True)
    raw = {"model": {"source": "torchvision", "name": "resnet18"},
           "data": {"kind": "imagefolder", "root": str(tmp_path)}}
    assert parse_recipe(raw).model.num_classes == 3
    raw["model"]["num_classes"] = 5
    assert parse_recipe(raw).model.num_classes == 5
    assert parse_recipe({"model": {"name": "resnet20"},
                         "data": {"kind": "digits"}}).model.num_classes == 10
