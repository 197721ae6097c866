"""Memory: a run that cannot fit is refused before training; one that grows past its limit
is stopped with a ResourceError, not by the kernel's out-of-memory killer."""

from __future__ import annotations

import time

import pytest
import torch
import torchvision

from deploykit.cli import main
from deploykit.errors import RecipeError, ResourceError
from deploykit.host.resources import memory_watchdog, rss_gb, training_memory_gb
from deploykit.recipe import parse_recipe


def test_training_memory_counts_weights_state_copies_and_activations():
    model = torchvision.models.resnet18(num_classes=10)
    weights = sum(p.numel() for p in model.parameters()) * 4 / 2**30
    sgd = training_memory_gb(model, (3, 32, 32), 8, "sgd")
    adam = training_memory_gb(model, (3, 32, 32), 8, "adamw", copies=0)
    assert sgd["weights"] == pytest.approx(weights)
    assert sgd["gradients and optimizer state"] == pytest.approx(2 * weights)
    assert adam["gradients and optimizer state"] == pytest.approx(3 * weights)
    assert sgd["model copies"] == pytest.approx(2 * weights) and adam["model copies"] == 0
    big = training_memory_gb(model, (3, 32, 32), 64, "sgd")
    assert sgd["activations"] > 0
    assert big["activations"] == pytest.approx(8 * sgd["activations"])
    assert model.training   # its mode is restored


def test_a_run_that_cannot_fit_exits_2_before_training(tiny_recipe_dict, write_yaml, tmp_path,
                                                      capsys):
    limit = round(rss_gb() + 3, 1)   # a batch of 256 at 512x512 keeps ~100 GiB of activations
    recipe = {**tiny_recipe_dict, "resources": {"max_memory_gb": limit},
              "data": {**tiny_recipe_dict["data"], "image_size": 512, "batch_size": 256}}
    assert main(["run", str(write_yaml(recipe)), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "resources: CifarResNet at 512x512, batch 256, needs at least" in err
    assert f"over the limit of {limit:.1f} GiB" in err and "lower data.batch_size" in err
    assert "Traceback" not in err and not (tmp_path / "out" / "baseline.pt").exists()


def test_a_limit_below_what_the_process_holds_is_refused(tiny_recipe_dict, write_yaml, tmp_path,
                                                        capsys):
    recipe = {**tiny_recipe_dict, "resources": {"max_memory_gb": 0.01}}
    assert main(["run", str(write_yaml(recipe)), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "resources.max_memory_gb (0.01 GiB) is below" in err and "Traceback" not in err


def test_the_watchdog_stops_a_block_that_passes_its_limit():
    t0 = time.perf_counter()
    over = r"the run of the model reached [\d.]+ GiB of resident memory, over the run.s limit"
    with pytest.raises(ResourceError, match=over), memory_watchdog(0.01, interval_s=0.02):
        while time.perf_counter() - t0 < 10:
            time.sleep(0.01)
    assert time.perf_counter() - t0 < 5
    with memory_watchdog(rss_gb() + 50, interval_s=0.02):   # under the limit: untouched
        time.sleep(0.1)
    with pytest.raises(KeyboardInterrupt), memory_watchdog(rss_gb() + 50):
        raise KeyboardInterrupt   # a user's Ctrl-C stays a Ctrl-C


def test_resources_keys_are_checked():
    assert parse_recipe({"resources": {"max_memory_gb": 4}}, "r.yaml",
                        check_paths=False).resources.max_memory_gb == 4
    for bad in ({"max_memory_gb": 0}, {"max_gb": 4}):
        with pytest.raises(RecipeError, match="resources"):
            parse_recipe({"resources": bad}, "r.yaml", check_paths=False)


def test_the_watchdog_stops_a_stage_past_its_budget_naming_it(tiny_recipe_dict, write_yaml,
                                                              tmp_path, monkeypatch, capsys):
    import deploykit.pipeline
    import deploykit.stages.prune

    def greedy(state, loaders, spec):   # a stage that grows well past the budget
        hog = torch.ones(2**30 // 4 * 3)   # 3 GiB
        time.sleep(10)
        return hog

    monkeypatch.setattr(deploykit.stages.prune, "run", greedy)
    monkeypatch.setattr(deploykit.pipeline, "memory_limit_gb", lambda recipe: rss_gb() + 1.5)
    recipe = {**tiny_recipe_dict, "stages": [{"kind": "prune", "target": {"ratio": 0.3}}]}
    t0 = time.perf_counter()
    assert main(["run", str(write_yaml(recipe)), "-o", str(tmp_path / "out")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "resources: stage prune of builtin:resnet20 reached" in err
    assert "raise resources.max_memory_gb" in err and "Traceback" not in err
    assert time.perf_counter() - t0 < 120


def test_the_watchdog_stops_a_block_even_where_a_library_replaced_the_sigint_handler():
    """Some native libraries install their own SIGINT handler (or ignore SIGINT); the watchdog
    puts Python's back for its block, so its interrupt still stops the block, and restores
    the library's afterwards."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        t0 = time.perf_counter()
        with pytest.raises(ResourceError), memory_watchdog(0.01, interval_s=0.02):
            while time.perf_counter() - t0 < 10:
                time.sleep(0.01)
        assert time.perf_counter() - t0 < 5
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
