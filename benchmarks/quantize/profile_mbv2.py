"""Per-kernel ONNX Runtime profile of mobilenet_v2 (224x224, random weights) at batch 1.

Profiles the float model, the pruned one (0.5x MACs, l1, round_to 16) and the chain (pruned +
INT8 for onnxruntime-cpu, first/last float), 2 threads. Prints each model's kernel time per
run by op type, then the convolutions split into depthwise and the rest (``conv_kind`` says
how the INT8 convs are told apart).

Usage: python benchmarks/quantize/profile_mbv2.py [--runs 120]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from deploykit.export import export_onnx
from deploykit.models import build_model, count_macs_params, find_first_last
from deploykit.prune import prune_to_macs
from deploykit.quant import build_quantized
from deploykit.recipe import ModelSpec, PruneSpec, QuantizeSpec

SHAPE = (3, 224, 224)


def profile(path: Path, prefix: Path, runs: int, warmup: int = 20, batch: int = 1
            ) -> list[dict]:
    """ORT's per-node kernel events of the last ``runs`` of ``warmup + runs`` runs at ``batch``
    (one profiled session; the warm-up runs' events are dropped by their timestamps)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.enable_profiling = True
    opts.profile_file_prefix = str(prefix)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, *SHAPE), dtype=np.float32)
    for _ in range(warmup + runs):
        sess.run(None, {name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session"
                    and e["name"] == "model_run")
    first_timed = starts[warmup]
    return [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
            and e["ts"] >= first_timed]


def l18_model(name: str) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """The torchvision ``name`` at 224x224 with random weights (seeded), 2 threads, and two
    seeded random batches of 8 to calibrate its INT8 version on."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_model(ModelSpec(source="torchvision", name=name, num_classes=1000)).eval()
    g = torch.Generator().manual_seed(0)
    return model, [torch.randn(8, *SHAPE, generator=g) for _ in range(2)]


def ms_per_run(events: list[dict], runs: int, key=lambda e: e["args"]["op_name"]
               ) -> collections.Counter:
    """Kernel milliseconds per run, summed by ``key(event)`` (the op type by default); ONNX
    Runtime reports microseconds over all ``runs``."""
    out: collections.Counter = collections.Counter()
    for e in events:
        out[key(e)] += e["dur"] / (1e3 * runs)
    return out


def print_ops(by_op: collections.Counter, top: int) -> None:
    for op, ms in by_op.most_common(top):
        print(f"  {op:24s} {ms:.3f} ms")


def _shape(entry: dict) -> list[int]:
    return next(iter(entry.values()))


def conv_kind(event: dict) -> str:
    """``depthwise`` or ``other``. Float convs show their weight shape (depthwise: one input
    channel per group). ONNX Runtime's QLinearConv events omit the prepacked weight, so there
    the test is on the NHWC activations: equal channels in and out, no growth in size. It also
    counts a 1x1 conv with equal channels (the first block's projection after pruning)."""
    args = event["args"]
    ins = [_shape(d) for d in args["input_type_shape"]]
    if args["op_name"] != "QLinearConv":
        return "depthwise" if len(ins[1]) == 4 and ins[1][1] == 1 else "other"
    x, y = ins[0], _shape(args["output_type_shape"][0])
    return "depthwise" if x[3] == y[3] and x[1] >= y[1] else "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=120)
    args = ap.parse_args()
    model, calib = l18_model("mobilenet_v2")
    tmp = Path(tempfile.mkdtemp())
    fl = find_first_last(model, SHAPE)
    macs = count_macs_params(model, SHAPE)[0]
    pruned, _, _ = prune_to_macs(model, SHAPE, PruneSpec(target={"macs_ratio": 0.5}, round_to=16),
                                 [fl[1]], macs // 2, 0.02 * macs)
    chain = build_quantized(pruned, QuantizeSpec(), list(fl), calib)
    for label, m in (("float", model), ("pruned", pruned), ("chain", chain)):
        events = profile(export_onnx(m, SHAPE, tmp / f"{label}.onnx"), tmp / label, args.runs)
        by_op = ms_per_run(events, args.runs)
        convs = [e for e in events if e["args"]["op_name"] in ("Conv", "QLinearConv", "FusedConv")]
        by_kind = ms_per_run(convs, args.runs, conv_kind)
        print(f"{label}: {sum(by_op.values()):.3f} ms of kernels per run "
              f"({len(events) / args.runs:.0f} kernels)")
        print_ops(by_op, 8)
        for kind, ms in sorted(by_kind.items()):
            print(f"  convs, {kind:15s} {ms:.3f} ms")


if __name__ == "__main__":
    main()
