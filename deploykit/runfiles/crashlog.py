"""The crash log of an internal error: the traceback, deploykit's version and the arguments,
written to a file the error message names (``DEPLOYKIT_LOG_DIR``, default the temp folder)."""

from __future__ import annotations

import datetime as _dt
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

__all__ = ["write_crash_log"]


def write_crash_log(argv: Sequence[str] | None) -> Path:
    """Write the current exception's traceback to a log file; return its path."""
    folder = Path(os.environ.get("DEPLOYKIT_LOG_DIR") or tempfile.gettempdir())
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"deploykit-crash-{stamp}-{os.getpid()}.log"
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("deploykit")
    except PackageNotFoundError:
        ours = "(not installed)"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"deploykit {ours}, python {sys.version.split()[0]}\n"
                    f"argv: {list(sys.argv[1:] if argv is None else argv)}\n\n"
                    f"{traceback.format_exc()}", encoding="utf-8")
    return path
