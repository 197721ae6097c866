"""Progress bars and console output (rich), quiet when not attached to a terminal."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
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


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]],
                caption: str | None = None) -> None:
    """A table of pre-formatted cells on the console."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), caption=None if caption is None else Text(caption))
    for h in headers:
        table.add_column(Text(h))
    for row in rows:  # Text: cells such as "min_speedup[onnxruntime-cpu b64]" are not markup
        table.add_row(*(Text(c) for c in row))
    console().print(table)
