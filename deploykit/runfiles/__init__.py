"""The run folder on disk: atomic writes (:mod:`.atomic`), the run record and the manifest that
marks a finished run (:mod:`.manifest`), the lock that keeps two runs out of one folder
(:mod:`.lock`) and the crash log (:mod:`.crashlog`)."""

from deploykit.runfiles.atomic import save_torch, write_text, write_with

__all__ = ["save_torch", "write_text", "write_with"]
