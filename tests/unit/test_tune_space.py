"""The tune search space: key paths resolve into the recipe, every choice and range end is
checked against the recipe's schema, and bad entries are clear errors naming the key."""

from __future__ import annotations

import pytest

from deploykit.errors import RecipeError
from deploykit.recipe import parse_recipe
from deploykit.tune.space import SearchSpace, config_hash


def _recipe(space: dict, stages: list | None = None, **tune) -> dict:
    return {
        "name": "t",
        "model": {"source": "builtin", "name": "resnet20", "num_classes": 4},
        "data": {"kind": "synthetic", "image_size": 16},
        "stages": stages if stages is not None else [
            {"kind": "prune", "target": {"macs_ratio": 0.5}},
            {"kind": "distill", "losses": {"kd": 1.0}},
            {"kind": "quantize"}],
        "tune": {"space": space, **tune},
    }


def _space(raw: dict) -> SearchSpace:
    return SearchSpace.from_recipe(parse_recipe(raw, "r.yaml"), "r.yaml")


class _Trial:
    """Optuna's suggest API, answering the first choice or the low end."""

    def __init__(self):
        self.asked = {}

    def suggest_categorical(self, name, choices):
        self.asked[name] = choices
        return choices[-1]

    def suggest_float(self, name, low, high, step=None, log=False):
        self.asked[name] = (low, high, step, log)
        return low

    def suggest_int(self, name, low, high, step=1, log=False):
        self.asked[name] = (low, high, step, log)
        return high


def test_keys_resolve_by_kind_position_and_section_and_apply():
    space = _space(_recipe({
        "prune.target.macs_ratio": {"low": 0.3, "high": 0.9},
        "prune.round_to": [8, 16],
        "stages[1].train.epochs": {"low": 1, "high": 5},
        "quantize.keep_float": [[], ["first"], ["first", "last"]],
        "quantize.keep_sensitive": [0, 2],
        "train.lr": {"low": 0.001, "high": 0.1, "log": True}}))
    assert [d.path for d in space.dims] == [
        ("stages", 0, "target", "macs_ratio"), ("stages", 0, "round_to"),
        ("stages", 1, "train", "epochs"), ("stages", 2, "keep_float"),
        ("stages", 2, "keep_sensitive"), ("train", "lr")]
    trial = _Trial()
    params = space.suggest(trial)
    # lists cannot be Optuna choices: their index is sampled, the value applied
    assert trial.asked["quantize.keep_float#"] == [0, 1, 2]
    assert params == {"prune.target.macs_ratio": 0.3, "prune.round_to": 16,
                      "stages[1].train.epochs": 5, "quantize.keep_float": ["first", "last"],
                      "quantize.keep_sensitive": 2, "train.lr": 0.001}
    assert trial.asked["train.lr"] == (0.001, 0.1, None, True)
    r = space.apply(params)
    assert r.stages[0].target.macs_ratio == 0.3 and r.stages[0].round_to == 16
    assert r.stages[1].train.epochs == 5 and r.stages[2].keep_sensitive == 2
    assert r.train.lr == 0.001 and r.tune is None
    assert config_hash(params) == config_hash(dict(reversed(params.items())))
    assert config_hash(params) != config_hash({**params, "prune.round_to": 8})


def test_an_optional_section_left_out_is_created():
    space = _space(_recipe({"prune.finetune.epochs": [1, 2]}))
    r = space.apply({"prune.finetune.epochs": 2})
    assert r.stages[0].finetune.epochs == 2


@pytest.mark.parametrize(("space", "stages", "message"), [
    ({"nosuch.x": [1]}, None,
     r"tune.space.nosuch.x: 'nosuch' is neither a stage of this recipe nor a section"),
    ({"prune.nosuch": [1]}, None,
     r"tune.space.prune.nosuch: the value 1 does not fit the recipe there: .*nosuch"),
    ({"prune.target.macs_ratio": {"low": 0.3, "high": 1.2}}, None,
     r"tune.space.prune.target.macs_ratio: the value 1.2 does not fit .*less than 1"),
    ({"prune.importance": ["l1", "magic"]}, None,
     r"tune.space.prune.importance: the value 'magic' does not fit"),
    ({"stages[5].round_to": [8]}, None, r"stages\[5\] is not one"),
    ({"prune.round_to": [8]}, [{"kind": "prune", "target": {"ratio": 0.2}},
                               {"kind": "prune", "target": {"ratio": 0.2}}],
     r"2 prune stages; name one as stages\[0\].round_to"),
    ({"prune": [8]}, None, "a key path has a section and a field"),
])
def test_bad_entries_name_the_key(space, stages, message):
    with pytest.raises(RecipeError, match=message):
        _space(_recipe(space, stages))


@pytest.mark.parametrize(("tune", "message"), [
    ({"space": {"prune.round_to": []}}, r"space.prune.round_to: an empty choice list"),
    ({"space": {}}, "space: empty"),
    ({"space": {"train.lr": {"low": 0.1, "high": 0.01}}}, "low 0.1 must be below high 0.01"),
    ({"space": {"train.lr": {"low": 0.1, "high": 0.2}}, "sampler": "grid"}, "sampler"),
])
def test_the_tune_section_itself_is_checked_when_the_recipe_loads(tune, message):
    raw = _recipe({})
    raw["tune"] = tune
    with pytest.raises(RecipeError, match=message):
        parse_recipe(raw, "r.yaml")


def test_the_latency_objective_must_be_measured_by_the_recipe():
    from deploykit.tune.study import check_tune

    raw = _recipe({"prune.round_to": [8, 16]}, latency={"runtime": "onnxruntime-cpu",
                                                        "batch": 8})
    raw["bench"] = {"runtimes": ["onnxruntime-cpu"], "batch_sizes": [1, 64]}
    with pytest.raises(RecipeError, match=r"tune.latency: onnxruntime-cpu at batch 8 is not "
                                          r"measured .* add it there"):
        check_tune(parse_recipe(raw, "r.yaml"), "r.yaml")


def test_a_latency_objective_on_simulated_int8_is_refused():
    """The chain ends in INT8 and torch-cpu reports no INT8 latency (its fake-quant
    simulation is not one): refused before the baseline trains."""
    from deploykit.tune.study import check_tune

    raw = _recipe({"prune.round_to": [8, 16]}, latency={"runtime": "torch-cpu", "batch": 1})
    raw["bench"] = {"runtimes": ["torch-cpu", "onnxruntime-cpu"], "batch_sizes": [1]}
    with pytest.raises(RecipeError, match=r"tune.latency.runtime torch-cpu: the chain ends in "
                                          r"an INT8 candidate"):
        check_tune(parse_recipe(raw, "r.yaml"), "r.yaml")
