"""Data-parallel training under torchrun (gloo, CPU) matches the single-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deploykit.host import distributed


def test_two_process_torchrun_gives_the_single_process_weights(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    import distributed_fit

    reference = distributed_fit.run()
    out = tmp_path / "ddp.pt"
    script = Path(distributed_fit.__file__)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(script.parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out, weights_only=True)
    assert got.keys() == reference.keys()
    # each process trained on half of every batch: 2 epochs x 64 images / 2 processes
    assert int(reference.pop("samples_seen_by_this_rank")) == 128
    assert int(got.pop("samples_seen_by_this_rank")) == 64
    for k in reference:
        torch.testing.assert_close(got[k], reference[k], rtol=1e-4, atol=1e-5)
    # and training did move the weights (the comparison is not between two initialisations)
    torch.manual_seed(0)
    init = distributed_fit.run.__globals__["nn"].Conv2d(3, 8, 3, padding=1).weight
    assert not torch.allclose(init, reference["0.weight"], atol=1e-3)


def test_single_process_helpers_are_no_ops():
    x, y = torch.randn(6, 2), torch.arange(6)
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    sx, sy = distributed.shard(x, y)
    assert sx is x and sy is y
    assert distributed.init_from_env() is False   # no torchrun environment
