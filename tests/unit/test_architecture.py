"""The package's shape, checked by walking every import (top level and inside functions).

Layers, lowest first; a module may import from its own unit or from a lower layer, never from a
sibling unit on its own layer or from anything above it. ``stages``, ``pipeline`` and ``cli``
sit at the top, so no lower layer can reach them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "deploykit"

LAYERS: list[set[str]] = [
    {"errors"},
    {"recipe"},
    {"host"},                        # progress, torchrun ranks, memory limits
    {"runfiles"},                    # atomic writes, manifest, lock, crash log
    {"models", "data", "state"},
    {"train"},
    {"prune", "lowrank", "distill", "export"},
    {"quant"},                       # QAT trains with distill's KD loss
    {"runtimes"},
    {"bench"},
    {"report"},
    {"measure", "gate"},
    {"tasks"},                       # a task's parts: model, data, loss, metric, measurement
    {"stages"},                      # drivers: receive the task in the pipeline state
    {"pipeline"},
    {"tune"},                        # trials are pipeline runs
    {"cli"},
    {"__main__", "__init__"},        # entry points: python -m deploykit, the lazy public API
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}
MAX_LINES = 350
MAX_ROOT_MODULES = 12


def _unit(module: str) -> str:
    """``deploykit.prune.pruner`` -> ``prune``; ``deploykit`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every deploykit import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "deploykit" or node.module.startswith("deploykit."):
                found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "deploykit" or a.name.startswith("deploykit."):
                    found.append((node.lineno, a.name, []))
    return found


def _package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_package_root_holds_at_most_a_dozen_modules():
    """Modules belong in the package of their concept; the root keeps the entry points and the
    few modules every concept shares."""
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, f"{len(root)} modules at the root: {root}"


def test_every_unit_of_the_package_has_a_layer():
    units = {_unit(_module_name(p)) for p in _package_files()}
    assert units <= set(RANK), f"give these a layer in LAYERS: {sorted(units - set(RANK))}"


def test_imports_only_point_down_the_layers():
    bad = []
    for path in _package_files():
        me = _unit(_module_name(path))
        for line, module, names in _imports(path):
            targets = [module]
            if module == "deploykit":   # `from deploykit.host import distributed` names a unit
                targets = [f"deploykit.{n}" for n in names]
            for target in targets:
                them = _unit(target)
                if them == me or them not in RANK:
                    continue
                if RANK[them] >= RANK[me]:
                    bad.append(f"{path.relative_to(ROOT)}:{line} ({me}, layer {RANK[me]}) "
                               f"imports {target} ({them}, layer {RANK[them]})")
    assert not bad, "imports against the flow:\n" + "\n".join(bad)


def test_no_lower_layer_imports_stages_or_cli():
    """The acceptance rule in its own words (implied by the layering, stated for clarity)."""
    for path in _package_files():
        me = _unit(_module_name(path))
        if me in ("stages", "pipeline", "cli", "__main__", "__init__"):
            continue
        for line, module, names in _imports(path):
            reached = {_unit(module)} | ({_unit(f"deploykit.{n}") for n in names}
                                        if module == "deploykit" else set())
            assert not reached & {"stages", "cli"}, f"{path.relative_to(ROOT)}:{line}"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize("where", ["deploykit", "tests", "benchmarks", "examples"])
def test_no_private_name_is_imported_across_packages(where):
    """A ``_name`` (or ``_module``) is used only inside the package that defines it."""
    bad = []
    for path in sorted((ROOT / where).rglob("*.py")):
        importer = _module_name(path)
        inside = importer.startswith("deploykit.")
        for line, module, names in _imports(path):
            same_unit = inside and _unit(module) == _unit(importer)
            private = [p for p in module.split(".") if _private(p)]
            private += [n for n in names if _private(n)]
            if private and not same_unit:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {private} from {module}")
    assert not bad, "private names imported across packages:\n" + "\n".join(bad)


def test_no_module_is_a_god_file():
    long = {str(p.relative_to(ROOT)): n for p in _package_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split by concept): {long}"


def test_every_subpackage_exports_its_public_names():
    """Each ``__init__`` lists ``__all__``, and every name in it resolves."""
    import importlib

    for init in sorted(PACKAGE.glob("*/__init__.py")):
        name = _module_name(init)
        mod = importlib.import_module(name)
        exported = getattr(mod, "__all__", None)
        assert exported, f"{name} has no __all__"
        missing = [n for n in exported if not hasattr(mod, n)]
        assert not missing, f"{name}.__all__ names what it does not have: {missing}"


def _runtime_imports(path: Path) -> list[str]:
    """The deploykit modules ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks left
    out: they never execute). ``from pkg import name`` counts as importing ``pkg.name`` when
    that is a module, else ``pkg``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    known = {_module_name(p) for p in _package_files()}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "deploykit":
                subs = [f"{node.module}.{a.name}" for a in node.names]
                found += [s for s in subs if s in known] or [node.module]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "deploykit"]
    return found


def test_no_import_cycle():
    """No module reaches itself through the imports that run (at top level or in a function)."""
    graph = {_module_name(p): set(_runtime_imports(p)) for p in _package_files()}
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            if n == m or n not in graph:
                continue
            if state.get(n) == "open":
                cycles.append(" -> ".join([*stack[stack.index(n):], n]))
            elif n not in state:
                visit(n, [*stack, n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
