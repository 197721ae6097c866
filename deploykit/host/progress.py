"""Progress bars and console output (rich), quiet when not attached to a terminal; the
:class:`Table` of pre-formatted cells that the console, Markdown and HTML views all render."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

_console: Console | None = None


def console() -> Console:
    """The shared stderr console (created on first use, never at import)."""
    global _console
    if _console is None:
        _console = Console(stderr=True, highlight=False)
    return _console


def _is_worker() -> bool:
    """A non-zero rank of a torchrun launch: it trains but stays quiet."""
    return int(os.environ.get("RANK", "0")) != 0


def _enabled() -> bool:
    return (console().is_terminal and not os.environ.get("DEPLOYKIT_NO_PROGRESS")
            and not _is_worker())


def make_progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=console(), transient=True, disable=not _enabled())


def progress_iter(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar on a terminal (plain iteration otherwise)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as prog:
        task = prog.add_task(desc, total=total, info="")
        for item in items:
            yield item
            prog.advance(task)


def log(message: str) -> None:
    """A one-line status message on stderr (from rank 0 only under torchrun)."""
    if _is_worker():
        return
    console().print(message, markup=False)


@dataclass(frozen=True)
class Table:
    """A titled table of already formatted cells; the console, Markdown and HTML render these."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    note: str = ""
    numeric_from: int = 1  # columns at or after this index are right-aligned


def print_table(table: Table) -> None:
    """Print ``table`` on the console (its note as the caption)."""
    from rich.table import Table as RichTable
    from rich.text import Text

    out = RichTable(title=Text(table.title), caption=Text(table.note) if table.note else None)
    for h in table.headers:
        out.add_column(Text(h))
    for row in table.rows:  # Text: cells such as "min_speedup[onnxruntime-cpu b64]" are not markup
        out.add_row(*(Text(c) for c in row))
    console().print(out)
