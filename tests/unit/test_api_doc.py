"""docs/api.md's examples run as written (doctest), from the repository root."""

from __future__ import annotations

import doctest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_api_page_examples_run(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = doctest.testfile(str(ROOT / "docs" / "api.md"), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10
    assert result.failed == 0, f"{result.failed} of docs/api.md's examples failed (see above)"


def test_run_takes_a_path_and_refuses_what_is_no_recipe(tmp_path):
    import pytest

    import deploykit

    with pytest.raises(deploykit.DeployKitError, match="recipe file not found"):
        deploykit.run(tmp_path / "nope.yaml")
    with pytest.raises(deploykit.DeployKitError, match="a recipe is a path to a YAML file"):
        deploykit.run(42)
