"""What a run gets from the machine and the process it runs in: console progress and logging
(:mod:`.progress`), torchrun ranks (:mod:`.distributed`), and memory limits with the watchdog
that enforces them (:mod:`.resources`)."""

from deploykit.host.progress import log

__all__ = ["log"]
