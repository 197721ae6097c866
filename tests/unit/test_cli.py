from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from deploykit.cli import main
from deploykit.models import build_model, make_checkpoint
from deploykit.recipe import ModelSpec


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploykit", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize(("patch", "expect"), [
    ({"train": {"epocs": 1}}, "train.epocs: unknown key"),
    ({"train": {"epochs": "ten"}}, "train.epochs"),
    ({"data": {"kind": "imagefolder", "root": "/no/such/dir"}}, "data.root: folder"),
])
def test_bad_recipes_exit_2_without_traceback(tiny_recipe_dict, write_yaml, patch, expect):
    path = write_yaml({**tiny_recipe_dict, **patch})
    proc = _run_cli("run", str(path))
    assert proc.returncode == 2
    assert expect in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mismatched_checkpoint_exits_2_before_training(tiny_recipe_dict, write_yaml, tmp_path,
                                                       capsys):
    ck = tmp_path / "ten.pt"
    torch.save(make_checkpoint(build_model(ModelSpec(name="resnet20", num_classes=10))), ck)
    recipe = {**tiny_recipe_dict, "model": {**tiny_recipe_dict["model"], "checkpoint": str(ck)}}
    assert main(["run", str(write_yaml(recipe)), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "has 10 classes but model.num_classes is 4" in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_corrupt_checkpoint_exits_2(tiny_recipe_dict, write_yaml, tmp_path, capsys):
    ck = tmp_path / "corrupt.pt"
    ck.write_bytes(b"\x00garbage")
    recipe = {**tiny_recipe_dict, "model": {**tiny_recipe_dict["model"], "checkpoint": str(ck)}}
    assert main(["run", str(write_yaml(recipe)), "-o", str(tmp_path / "out")]) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err


def test_inspect_model_prints_first_last_and_macs(capsys):
    assert main(["inspect", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "first layer: conv1  last layer: fc" in out
    assert "MACs: 41.4" in out


def test_inspect_shows_a_detector_graph_by_graph(capsys):
    """A detector: its network with the prediction convs kept whole by pruning and float in
    INT8, MACs at the asked size; a two-stage detector adds its box head, counted over its
    proposals, and says INT8 is not built for it."""
    assert main(["inspect", "torchvision:ssdlite320_mobilenet_v3_large", "--image-size", "64",
                 "--num-classes", "3"]) == 0
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "network (backbone, neck, heads) at 64x64" in text
    assert "first layer: backbone.features.0.0.0" in text
    assert "last layer: head.classification_head.module_list.5.1" in text
    assert text.count("float in INT8") >= 13   # the stem and 12 prediction convs
    macs = float(re.search(r"MACs: ([\d.]+) M", text).group(1))
    assert 1 < macs < 100
    assert main(["inspect", "fasterrcnn_mobilenet_v3_large_320_fpn", "--num-classes", "3"]) == 0
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "box head (per proposal) input 256x7x7" in text
    assert re.search(r"MACs: [\d.]+ M \(\d+ runs per image\)", text)
    assert "INT8 of two-stage detectors" in text and "float in INT8" not in text


def test_inspect_recipe_prints_resolved_defaults(tiny_recipe_dict, write_yaml, capsys):
    assert main(["inspect", str(write_yaml(tiny_recipe_dict))]) == 0
    out = capsys.readouterr().out
    assert "batch_sizes:" in out and "opset: 18" in out


def test_help_lists_subcommands():
    proc = _run_cli("--help")
    assert proc.returncode == 0
    for cmd in ("run", "export", "bench", "inspect"):
        assert cmd in proc.stdout


def test_resume_without_earlier_run_is_user_error(tiny_recipe_dict, write_yaml, tmp_path,
                                                  monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(write_yaml(tiny_recipe_dict)), "--resume"]) == 2
    assert "no earlier run" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_unavailable_runtime_exits_2_before_any_checkpoint(tiny_recipe_dict, write_yaml,
                                                           tmp_path, capsys):
    recipe = {**tiny_recipe_dict, "bench": {**tiny_recipe_dict["bench"],
                                            "runtimes": ["onnxruntime-cpu", "torch-cuda"]}}
    out = tmp_path / "out"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "bench.runtimes[1]: runtime torch-cuda needs a CUDA GPU" in err
    assert "drop this runtime" in err
    assert not list(out.rglob("*.pt")) and not (out / "checkpoints").exists()


@pytest.mark.parametrize(("patch", "expect"), [
    ({"gates": {"candidate": "ptq-int9", "max_accuracy_drop": 1}},
     "gates.candidate 'ptq-int9' is not a candidate of this recipe; its stages produce: "
     "baseline"),
    ({"gates": {"min_speedup": {"value": 1.5, "runtime": "tensorrt"}}},
     "gates.min_speedup.runtime 'tensorrt' is not measured: add it to bench.runtimes"),
    ({"data": {"kind": "digits", "std": [0, 0, 0]}}, "data.std must be positive"),
    ({"data": {"kind": "digits", "image_size": 100000000}}, "data.image_size"),
    ({"train": {"lr": float("inf")}}, "train.lr"),
    ({"export": {"onnx": {"opset": 99}}}, "opset 99 is newer than the installed onnx"),
    ({"name": "a/../../../etc/x"}, "name: String should match pattern"),
    ({"output": "../elsewhere/{recipe}"}, "may not contain '..'"),
])
def test_values_the_run_cannot_use_exit_2_at_load(tiny_recipe_dict, write_yaml, tmp_path,
                                                  capsys, patch, expect):
    out = tmp_path / "out"
    assert main(["run", str(write_yaml({**tiny_recipe_dict, **patch})), "-o", str(out)]) == 2
    assert expect in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


@pytest.mark.parametrize(("content", "expect"), [
    (b"", "the recipe is empty"), (b"# nothing here\n", "the recipe is empty"),
    ("name: caf\u00e9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 9)"),
    ("name: x\n".encode("utf-16"), "saved as UTF-16"),
    (b"seed: " + b"9" * 5000, "a value cannot be read"),
    (b"a: " + b"[" * 2000 + b"]" * 2000, "nested"),
])
def test_unreadable_recipe_files_exit_2(tmp_path, capsys, content, expect):
    path = tmp_path / "r.yaml"
    path.write_bytes(content)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err


def test_an_internal_error_exits_3_with_the_traceback_in_a_log(tiny_recipe_dict, write_yaml,
                                                               tmp_path, monkeypatch, capsys):
    import deploykit.pipeline

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(deploykit.pipeline, "run", broken)
    monkeypatch.setenv("DEPLOYKIT_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("DEPLOYKIT_TRACEBACK", raising=False)
    assert main(["run", str(write_yaml(tiny_recipe_dict)), "-o", str(tmp_path / "o")]) == 3
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: a bug" in err and "deploykit bug" in err
    assert "Traceback" not in err
    (log,) = (tmp_path / "logs").glob("deploykit-crash-*.log")
    assert str(log) in err.replace("\n", "")
    assert "Traceback" in log.read_text() and "in broken" in log.read_text()


def test_resume_picks_only_this_recipes_runs(tiny_recipe_dict, tmp_path, monkeypatch):
    from deploykit.pipeline import resolve_output_dir
    from deploykit.recipe import parse_recipe

    monkeypatch.chdir(tmp_path)
    for folder in ("qs-20260101-000000", "qs-20260102-000000", "qs-big-20260103-000000"):
        (tmp_path / "runs" / folder).mkdir(parents=True)
    recipe = parse_recipe({**tiny_recipe_dict, "name": "qs"}, check_paths=False)
    assert resolve_output_dir(recipe, None, True).name == "qs-20260102-000000"


def _nan_checkpoint(path):
    model = build_model(ModelSpec(name="resnet20", num_classes=4))
    for p in model.parameters():
        p.data.fill_(float("nan"))
    torch.save(make_checkpoint(model), path)


@pytest.mark.parametrize(("make", "expect"), [
    (lambda p: p.write_bytes(b""), "the file is empty (0 bytes)"),
    (_nan_checkpoint, "hold NaN or infinite values (first: conv1.weight)"),
    (lambda p: torch.save({}, p), "not a state dict"),
])
def test_unusable_checkpoints_exit_2_before_anything_is_written(
        tiny_recipe_dict, write_yaml, tmp_path, capsys, make, expect):
    ck = tmp_path / "bad.pt"
    make(ck)
    recipe = {**tiny_recipe_dict, "model": {**tiny_recipe_dict["model"], "checkpoint": str(ck)}}
    out = tmp_path / "out"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert expect in err and "Traceback" not in err
    assert not list(out.rglob("*.pt"))


def test_a_factory_without_num_classes_exits_2(tiny_recipe_dict, write_yaml, tmp_path, capsys,
                                               monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch\ndef net():\n    return torch.nn.Linear(3, 2)\n"
        "def broken(num_classes):\n    raise KeyError('oops')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for fn, expect in (("net", "mymodels:net must accept a num_classes keyword argument"),
                       ("broken", "mymodels:broken(num_classes=4) raised KeyError: 'oops'")):
        recipe = {**tiny_recipe_dict, "model": {"source": "factory", "name": f"mymodels:{fn}",
                                                "num_classes": 4}}
        assert main(["run", str(write_yaml(recipe)), "-o", str(tmp_path / "out")]) == 2
        assert expect in " ".join(capsys.readouterr().err.split())


def test_a_corrupt_image_exits_2_before_any_checkpoint(tiny_recipe_dict, write_yaml, tmp_path,
                                                       capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b", "c", "d"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / c / f"{i}.png")
    (tmp_path / "data" / "train" / "c" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off")
    recipe = {**tiny_recipe_dict, "data": {"kind": "imagefolder", "root": str(tmp_path / "data"),
                                           "image_size": 16, "batch_size": 4}}
    out = tmp_path / "out"
    assert main(["run", str(write_yaml(recipe)), "-o", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "1 of 17 images cannot be decoded" in err and "bad.jpg" in err
    assert "data.skip_corrupt: true" in err and not list(out.rglob("*.pt"))


def test_version_flag_prints_the_version(capsys):
    from deploykit import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"deploykit {__version__}"


def test_verify_on_a_folder_that_is_no_run_is_a_user_error(tmp_path, capsys):
    """A folder without run.json or manifest.json is not a run (exit 2); an unfinished run
    (run.json, no manifest) is a run that is not whole (exit 1)."""
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["verify", str(tmp_path)]) == 2
    assert "not a deploykit run folder" in capsys.readouterr().err
    (tmp_path / "run.json").write_text("{}")
    assert main(["verify", str(tmp_path)]) == 1


def test_inspect_reads_a_recipe_file_whatever_its_suffix(tiny_recipe_dict, write_yaml, capsys):
    path = write_yaml(tiny_recipe_dict, name="my-recipe")
    assert main(["inspect", str(path)]) == 0
    assert "resnet20" in capsys.readouterr().out


def test_bench_of_a_recipe_writes_its_onnx_under_the_output_folder_and_says_untrained(
        tiny_recipe_dict, write_yaml, tmp_path, capsys):
    import onnx

    tiny_recipe_dict["output"] = str(tmp_path / "runs" / "{recipe}-{timestamp}")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    path = write_yaml(tiny_recipe_dict, name="recipes/tiny.yaml")
    assert main(["bench", str(path), "--batch", "1", "--iterations", "5", "--warmup", "1",
                 "--target-ci", "0"]) == 0
    assert list(recipes.iterdir()) == [path]              # nothing written beside the recipe
    written = list((tmp_path / "runs").glob("tiny-*/tiny.onnx"))
    assert len(written) == 1
    meta = {p.key: p.value for p in onnx.load(str(written[0])).metadata_props}
    assert meta["deploykit.weights"].startswith("untrained")
    assert "initial weights (random, not trained)" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(("patch", "expect"), [
    ({"data": {"kind": "imagefolder", "root": "no/such/folder"}}, "data.root"),
    ({"tune": {"space": {"stages.0.targt.ratio": [0.3, 0.5]}}}, "targt"),
    ({"stages": [{"kind": "prune", "target": {"ratio": 0.5}, "ignored": ["no_such_layer*"]}]},
     "pattern 'no_such_layer*' matches no module"),
])
def test_inspect_refuses_what_run_would_before_any_training(tiny_recipe_dict, write_yaml,
                                                            capsys, patch, expect):
    """inspect runs every check `run` makes before reading data or training: paths, the tune
    space, the model against every stage."""
    assert main(["inspect", str(write_yaml({**tiny_recipe_dict, **patch}))]) == 2
    assert expect in capsys.readouterr().err
