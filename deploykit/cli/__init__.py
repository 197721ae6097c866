"""Command line: thin subcommands, each parsing its arguments and calling one library function.

Exit codes (stable): 0 ok, 1 a gate failed (or ``verify`` found a changed file), 2 user error
(bad recipe, missing file, unavailable backend, not enough memory), 3 internal error (a
deploykit bug: the traceback goes to a log file, named on screen), 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from deploykit.cli.parser import build_parser
from deploykit.errors import DeployKitError
from deploykit.runfiles.crashlog import write_crash_log

__all__ = ["build_parser", "main"]

EXIT_BUG = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; user errors print one paragraph and return 2,
    anything else is a deploykit bug: one paragraph naming a log file with the traceback, 3."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except DeployKitError as e:
        print(f"deploykit: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("deploykit: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    except MemoryError:
        print("deploykit: error: out of memory; lower data.batch_size or data.image_size, or "
              "set resources.max_memory_gb to stop early with an estimate", file=sys.stderr)
        return 2
    except Exception as e:
        try:
            where = f"the traceback is in {write_crash_log(argv)}"
        except OSError:
            where = "the traceback could not be written to a log file"
        print(f"deploykit: internal error: {type(e).__name__}: {str(e)[:300]}\n"
              f"This is a deploykit bug, not a problem with your input; {where} (attach it "
              "to a bug report).", file=sys.stderr)
        if os.environ.get("DEPLOYKIT_TRACEBACK"):
            traceback.print_exc()
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
