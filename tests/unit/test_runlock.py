"""One run per folder: the lock refuses a second writer and is taken over after a kill -9."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from deploykit.runfiles.lock import LOCK_NAME, RunLockedError, run_lock

HOLD = """
import sys, time
from pathlib import Path
from deploykit.runfiles.lock import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_the_folder_is_refused_naming_the_holder(tmp_path):
    proc = _holder(tmp_path)
    try:
        with (pytest.raises(RunLockedError, match=f"pid {proc.pid}.*another --output"),
              run_lock(tmp_path)):
            pass
    finally:
        proc.terminate()
        proc.wait()


def test_a_stale_lock_from_a_killed_run_is_taken_over(tmp_path, capsys):
    proc = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / LOCK_NAME).is_file()   # left behind by the killed run
    with run_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] != proc.pid
    err = " ".join(capsys.readouterr().err.split())
    assert f"taking over the lock of run pid {proc.pid}" in err
    assert not (tmp_path / LOCK_NAME).exists()   # released on exit


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    with pytest.raises(ValueError), run_lock(tmp_path):
        raise ValueError("boom")
    with run_lock(tmp_path):   # free again
        time.sleep(0)
