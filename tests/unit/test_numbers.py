"""One place holds each benchmark number (the benchmark's JSON); the summaries in README.md,
benchmarks/README.md, the benchmark's own README and docs quote it as it is there."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _zoo() -> dict[str, int]:
    rows = json.loads((ROOT / "benchmarks/zoo/results/zoo.json").read_text())["rows"]
    tv = [r for r in rows if r["source"] == "torchvision"]
    timm = [r for r in rows if r["source"] == "timm"]
    return {"ok": sum(r["status"] == "ok" for r in tv), "n": len(tv),
            "clean": sum(r["status"] in ("ok", "DeployKitError") for r in tv),
            "tracebacks": sum(r["status"] == "traceback" for r in rows),
            "timm_ok": sum(r["status"] == "ok" for r in timm), "timm_n": len(timm)}


def test_the_zoo_counts_are_quoted_as_the_json_has_them():
    z = _zoo()
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (f"{z['ok']} of {z['n']} torchvision models complete the chain" in readme
            and f"{z['clean']} of {z['n']} complete or stop with a clear error" in readme
            and f"timm: {z['timm_ok']} of {z['timm_n']} complete" in readme)
    zoo = " ".join((ROOT / "benchmarks/zoo/README.md").read_text().split())
    assert (f"torchvision: {z['ok']}/{z['n']} complete the chain" in zoo
            and f"{z['clean']}/{z['n']} complete or stop with a DeployKitError" in zoo
            and f"{z['tracebacks']} tracebacks; timm: {z['timm_ok']}/{z['timm_n']} complete"
            in zoo)
    bench = " ".join((ROOT / "benchmarks/README.md").read_text().split())
    assert f"all {z['n']}: {z['ok']} complete" in bench
    assert f"timm: {z['timm_ok']} of {z['timm_n']} complete" in bench
    # the zoo README's history lives in HISTORY.md; no other count of the sweep stays beside
    # the current one
    quoted = {int(k) for k in re.findall(rf"\b(\d+)/{z['n']} complete", zoo)}
    assert quoted == {z["ok"], z["clean"]}, quoted


def test_the_tune_study_is_quoted_with_its_trial_count():
    rows = json.loads((ROOT / "benchmarks/tune/results/r20_tune.json").read_text())["rows"]
    doc = " ".join((ROOT / "docs/tune.md").read_text().split())
    assert f"({len(rows)} trials;" in doc


# -- every number of every summary table ---------------------------------------------------
#
# A table cell's number must be one of its benchmark's JSON values as printed (the value
# itself, x100 for percentages, x1e-6 for M, 1/x for a speed-up from a latency ratio, bytes
# in MB or GiB), or follow from other numbers of the same table by the one arithmetic the
# tables use: a change against the table's first row (whose own ratio is 1.00x), or the mean
# of the row's last numbers before it (seeds). The prose answers of the overview tables
# (benchmarks/README.md's task list, README.md's "What works today") are held to the section
# they link to: each decimal, ratio or percentage there is a number of that section's tables
# or (given to 2 decimals or more, so a coincidence is unlikely) a value of its JSON. Integers
# in prose (counts of trials, seeds, rows) are not matched; the zoo's counts are, above.

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
_NUMERIC_CELL = re.compile(r"[-+0-9., /x%MBGi~()]*")
_SCALES = (1.0, 100.0, 1e-6, 1e-3, 1 / 2**20, 1 / 2**30)


def _values(obj: object, out: list[float]) -> list[float]:
    if isinstance(obj, bool) or obj is None:
        return out
    if isinstance(obj, (int, float)):
        out.append(float(obj))
    elif isinstance(obj, dict):
        for v in obj.values():
            _values(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _values(v, out)
    return out


def _numbers(cell: str) -> list[tuple[str, float, int]]:
    """(text, value, decimals) of each number in a numeric cell; none in a cell of words."""
    cell = cell.replace("*", "").strip()
    if not _NUMERIC_CELL.fullmatch(cell) or not re.search(r"\d", cell):
        return []
    return [(m, float(m.replace(",", "")), len(m.split(".")[1]) if "." in m else 0)
            for m in _NUMBER.findall(cell)]


def _prose_numbers(text: str) -> list[tuple[str, float, int]]:
    """Decimals, ratios (``1.8x``) and percentages in running text."""
    text = re.sub(r"`[^`]*`|\([^)]*\.(?:md|json|py)[^)]*\)", " ", text)   # code, links
    found = []
    for m in re.finditer(r"(?<![\w.])([-+]?\d[\d,]*(?:\.\d+)?)(x|%)?(?![\w.]*\d)", text):
        num, unit = m.group(1), m.group(2)
        if "." in num or unit:
            found.append((num, float(num.replace(",", "")),
                          len(num.split(".")[1]) if "." in num else 0))
    return found


def _close(value: float, x: float, decimals: int) -> bool:
    return abs(abs(value) - abs(x)) <= 0.5 * 10**-decimals * (1 + 1e-9) + 1e-12


def _in_json(x: float, decimals: int, values: list[float]) -> bool:
    return any(_close(v * s, x, decimals) for v in values for s in _SCALES) or any(
        v and _close(1 / v, x, decimals) for v in values)


def _tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables of ``text``, each as rows of cells, header row first."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def _json_files(text: str, folder: Path) -> list[Path]:
    names = sorted(set(re.findall(r"([\w/.-]*results/[\w.-]+\.json)", text)))
    files = []
    for name in names:
        found = next((p for p in (folder / name, ROOT / "benchmarks" / name, ROOT / name)
                      if p.is_file()), None)
        assert found, f"{name} is quoted but no such JSON file exists"
        files.append(found)
    return files


def _sections(path: Path) -> dict[str, str]:
    """Sections of a Markdown file by their GitHub anchor; '' is the whole file."""
    text = path.read_text()
    out = {"": text}
    for part in re.split(r"\n(?=#+ )", text):
        title = part.splitlines()[0].lstrip("#").strip()
        anchor = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        out[anchor] = part
    return out


def _check_tables(text: str, values: list[float], where: str) -> list[float]:
    """Every number of every table of ``text`` explained; returns the tables' numbers."""
    problems, table_numbers = [], []
    for table in _tables(text):
        body = table[1:]
        if any(any(c == "not measured" for c in row) for row in body):
            continue   # a plan (what will be measured), not a result
        first = [x for c in body[0] for _, x, _ in _numbers(c)] if body else []
        for row in body:
            seen: list[float] = []
            for cell in row:
                for raw, x, dec in _numbers(cell):
                    ok = (_in_json(x, dec, values)
                          or (row is body[0] and x == 1.0 and "x" in cell)   # the reference
                          or any(_close(a - b, x, dec) for a in seen for b in first)
                          or any(_close(sum(seen[-k:]) / k, x, dec)
                                 for k in range(2, len(seen) + 1)))
                    if not ok:
                        problems.append(f"{raw!r} in {row[0]!r}")
                    seen.append(x)
                    table_numbers.append(x)
    assert not problems, f"{where}: numbers not in its JSON: {problems}"
    return table_numbers


def _result_files() -> list[tuple[Path, str, str]]:
    """(file, section anchor, its text) of every benchmark summary: each section of
    benchmarks/README.md, and each benchmark's own README as a whole."""
    top = ROOT / "benchmarks" / "README.md"
    out = [(top, a, t) for a, t in _sections(top).items() if a]
    out += [(p, "", p.read_text()) for p in sorted((ROOT / "benchmarks").glob("*/README.md"))]
    return out


def _section_numbers(path: Path, anchor: str) -> tuple[list[float], list[float]]:
    """(the JSON values, the table numbers) of a section, its tables checked."""
    text = _sections(path)[anchor]
    values = [v for f in _json_files(text, path.parent) for v in _values(
        json.loads(f.read_text()), [])]
    return values, _check_tables(text, values, f"{path.relative_to(ROOT)}#{anchor}")


def test_every_number_of_every_benchmark_table_is_in_its_json():
    for path, anchor, _ in _result_files():
        _section_numbers(path, anchor)


def _check_overview(rows: list[list[str]], link_col: int, answer_col: int, base: Path):
    problems = []
    for row in rows:
        links = re.findall(r"\]\(([^)#]*)(?:#([^)]*))?\)", row[link_col])
        link = next(((f, a) for f, a in links if "benchmarks" in str((base / f).resolve())
                     or base.name == "benchmarks"), None)
        if link is None:
            continue
        target = (base / (link[0] or "README.md")).resolve()
        values, table = _section_numbers(target, link[1] or "")
        for raw, x, dec in _prose_numbers(row[answer_col]):
            if not (any(_close(v, x, dec) for v in table)
                    or (dec >= 2 and _in_json(x, dec, values))):
                problems.append(f"{raw!r} in {row[0][:40]!r}")
    assert not problems, problems


def test_the_overview_answers_quote_their_sections():
    top = ROOT / "benchmarks" / "README.md"
    overview = next(t for t in _tables(top.read_text()) if t[0][:2] == ["task", "question"])
    _check_overview(overview[1:], 0, 2, top.parent)
    works = next(t for t in _tables((ROOT / "README.md").read_text())
                 if t[0] == ["capability", "state", "details"])
    _check_overview(works[1:], 2, 1, ROOT)


def test_the_quickstart_table_and_picture_are_the_benchmark_json_s():
    """README.md and benchmarks/README.md show the quickstart table as
    benchmarks/quickstart/run.py renders it from its JSON, and README's picture exists."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "quickstart_bench", ROOT / "benchmarks/quickstart/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = json.loads(module.RESULT.read_text())
    block = module.block(result)
    for readme in module.READMES:
        assert block in readme.read_text(), f"{readme.name}: rerun benchmarks/quickstart/run.py"
    assert "docs/images/quickstart-pareto.png" in (ROOT / "README.md").read_text()
    assert module.PICTURE.stat().st_size > 10_000
    # the table is the report's: four candidates, the baseline at 1.00x
    assert [c["name"] for c in result["report"]["candidates"]] == [
        "baseline", "prune", "prune+distill", "ptq-int8"]
