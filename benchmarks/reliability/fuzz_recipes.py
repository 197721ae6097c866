"""Recipe fuzz: N generated recipe files through ``load_recipe``, and a sample through the CLI.

Every file must load or raise a DeployKitError (exit 2 on the command line); anything else is
a traceback, counted and shown. The files are mutations of the shipped recipes (values
replaced by hostile ones: wrong types, infinities, NaN, 40-digit integers, NUL bytes, path
escapes, unknown runtimes and candidates, deep structures; keys deleted or added), re-encoded
as UTF-8, UTF-16 or Latin-1, plus random bytes, deep nesting, huge integers, empty files and
alias bombs ("billion laughs": levels of anchors repeating the one before, as lists, mappings
or merge keys). Every load must also finish within a second; slower ones are counted.

Usage (from the repository root):
    python benchmarks/reliability/fuzz_recipes.py [--n 10000] [--cli 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
HOSTILE: list[Any] = [
    None, True, False, 0, -1, 1, 10**40, -(10**40), 1e999, -1e999, float("nan"), 0.0, 3.5,
    "", "x" * 20000, "nosuch", "../../../etc/x", "a\x00b", "torch-cuda", "tensorrt", "tpu",
    "ptq-int9", "{timestamp}", [], {}, [1, 2], {"a": 1}, [[[[[]]]]], {"kind": ["prune"]},
    {"kind": "prune"}, 99, 100000000, [0, 0, 0], "/no/such/file.pt", "C:\\x", "\u00fc\u00df",
]


def _paths(d: Any, pre: tuple = ()) -> list[tuple]:
    out = []
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else []
    for k, v in items:
        out.append((*pre, k))
        out += _paths(v, (*pre, k))
    return out


def _mutant(rng: random.Random, bases: list[dict]) -> bytes:
    recipe = copy.deepcopy(rng.choice(bases))
    for _ in range(rng.randint(1, 4)):
        paths = _paths(recipe)
        if not paths:
            break
        path = rng.choice(paths)
        parent = recipe
        for k in path[:-1]:
            parent = parent[k]
        action = rng.random()
        if action < 0.15 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action < 0.3 and isinstance(parent, dict):
            parent[rng.choice(["epocs", "kind", "extra", "1", "nan"])] = rng.choice(HOSTILE)
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(HOSTILE))
    text = yaml.safe_dump(recipe, allow_unicode=True)
    return text.encode(rng.choice(["utf-8"] * 6 + ["utf-16", "latin-1"]), errors="replace")


def alias_bomb(levels: int, width: int, kind: str, key: str = "model: {name: %s}") -> str:
    """A "billion laughs" YAML file: ``levels`` anchors, each repeating the one before
    ``width`` times as a list of aliases (``kind="list"``), a mapping of aliases (``"map"``)
    or a mapping merging it plus a list of it (``"merge"``); ``key`` places the last one.
    The unit tests throw the same shapes (tests/unit/test_recipe_fuzz.py)."""
    lines = ['a0: &a0 {k: "lol"}' if kind == "merge" else 'a0: &a0 "lol"']
    for i in range(1, levels + 1):
        prev = f"*a{i - 1}"
        if kind == "list":
            body = "[" + ", ".join([prev] * width) + "]"
        elif kind == "map":
            body = "{" + ", ".join(f"k{j}: {prev}" for j in range(width)) + "}"
        else:
            body = "{<<: " + prev + f", x{i}: [" + ", ".join([prev] * width) + "]}"
        lines.append(f"a{i}: &a{i} {body}")
    return "\n".join([*lines, key % f"*a{levels}"]) + "\n"


def _laughs(rng: random.Random) -> bytes:
    """An alias bomb of random shape, placed under a random key."""
    key = rng.choice(["model: {name: %s}", "stages: %s", "name: %s", "x: %s"])
    return alias_bomb(rng.randint(3, 12), rng.randint(2, 12), rng.choice(["list", "map", "merge"]),
                      key).encode()


def _kind(doc: bytes) -> str:
    """Which generator made ``doc`` (for the counts)."""
    if doc.startswith(b"a0: &a0"):
        return "alias bomb"
    if doc.startswith(b"a: [[") or doc.startswith(b"seed: 99"):
        return "deep nesting or huge integer"
    return "mutated recipe, random bytes or tiny file"


def document(rng: random.Random, bases: list[dict]) -> bytes:
    r = rng.random()
    if r < 0.82:
        return _mutant(rng, bases)
    if r < 0.85:
        return _laughs(rng)
    if r < 0.90:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    if r < 0.93:
        n = rng.randint(50, 5000)
        return b"a: " + b"[" * n + b"]" * n
    if r < 0.96:
        return b"seed: " + b"9" * rng.randint(4000, 8000)
    return rng.choice([b"", b"# comment\n", b"---\n", b"[]", b"42", b"~", b"a: &x [*x]",
                       b"!!python/object/apply:os.system [ls]", b"a: !!binary AAAA"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="recipes through load_recipe")
    ap.add_argument("--cli", type=int, default=200, help="of those, through `deploykit inspect`")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/reliability/results/fuzz.json",
                    help="where the counts go (the reliability README quotes them)")
    args = ap.parse_args()

    from deploykit.errors import DeployKitError
    from deploykit.recipe import load_recipe

    rng = random.Random(args.seed)
    bases = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "recipes").glob("*.yaml"))]
    outcomes: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    tracebacks: dict[str, bytes] = {}
    slow: list[tuple[float, bytes]] = []
    slowest = 0.0
    # one untimed load first: the loader's lazy imports (torch, onnxruntime for the runtime
    # checks) happen once per process and are not what a slow load measures
    load_recipe(ROOT / "recipes/quickstart.yaml")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        cli_every = max(1, args.n // max(args.cli, 1))
        cli_codes: collections.Counter[int] = collections.Counter()
        for i in range(args.n):
            doc = document(rng, bases)
            kinds[_kind(doc)] += 1
            path.write_bytes(doc)
            t_load = time.perf_counter()
            try:
                load_recipe(path)
                outcomes["loaded"] += 1
            except DeployKitError:
                outcomes["DeployKitError"] += 1
            except BaseException as e:   # what the fuzz exists to find
                key = f"{type(e).__name__}: {str(e)[:100]}"
                outcomes["traceback"] += 1
                tracebacks.setdefault(key, doc[:200])
            took = time.perf_counter() - t_load
            slowest = max(slowest, took)
            if took > 1.0:
                slow.append((took, doc[:200]))
            if args.cli and i % cli_every == 0:
                proc = subprocess.run([sys.executable, "-m", "deploykit", "inspect", str(path)],
                                      capture_output=True, text=True, timeout=120)
                cli_codes[proc.returncode] += 1
                if proc.returncode not in (0, 2) or "Traceback" in proc.stderr:
                    tracebacks.setdefault(f"CLI exit {proc.returncode}", doc[:200])
    seconds = time.perf_counter() - t0
    print(f"{args.n} recipes in {seconds:.0f} s: {dict(outcomes)}")
    print(f"through the CLI ({sum(cli_codes.values())}): exit codes {dict(cli_codes)}")
    print(f"tracebacks: {outcomes['traceback']} ({len(tracebacks)} kinds)")
    for key, doc in tracebacks.items():
        print(f"  {key}\n    {doc!r}")
    print(f"loads over 1 s: {len(slow)} (slowest {slowest:.3f} s)")
    for took, doc in sorted(slow, reverse=True)[:5]:
        print(f"  {took:.1f} s: {doc!r}")
    from deploykit.bench import environment

    env = environment(threads=1)
    result = {"command": "python benchmarks/reliability/fuzz_recipes.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "cpu": env.get("cpu_model"), "cpu_int8_features": env.get("cpu_int8_features"),
              "recipes": args.n, "seed": args.seed, "seconds": round(seconds, 1),
              "documents": dict(kinds), "outcomes": dict(outcomes),
              "tracebacks": outcomes["traceback"] + sum(k.startswith("CLI") for k in tracebacks),
              "cli": sum(cli_codes.values()),
              "cli_exit_codes": {str(k): v for k, v in cli_codes.items()},
              "loads_over_1s": len(slow), "slowest_load_s": round(slowest, 3)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"counts in {args.json}")
    sys.exit(1 if tracebacks or slow else 0)


if __name__ == "__main__":
    main()
