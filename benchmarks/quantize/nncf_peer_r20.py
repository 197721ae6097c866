"""The vendor's quantizer as the peer: NNCF post-training quantization against deploykit's PTQ
on the same trained R20 (CIFAR-10 ResNet-20), the same calibration images, both artifacts run
on ONNX Runtime CPU and OpenVINO CPU.

Candidates: the float model; deploykit PTQ (percentile calibration, first/last float) for
``target: onnxruntime-cpu`` and ``target: openvino``; NNCF's ``nncf.quantize`` on the float ONNX
file with its defaults (performance preset, CPU target: every layer INT8), and with the first
conv and the classifier ignored (deploykit's placement). Calibration: the recipe's 1,024
training images (``data.calib_samples``), the same for both tools. Top-1: each INT8 file on
the 10,000 test images in both runtimes. Latency: every (file, runtime) pair timed alternately
in one process at batch 1 and 64, 2 threads.

Needs ``pip install nncf`` (not a deploykit dependency) and ../shared/data/cifar10; trains the
R20 baseline first when benchmarks/results/cache has none (15 epochs).

Usage: python benchmarks/quantize/nncf_peer_r20.py [--batches 1 64] [--iterations 40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import cifar_loaders, r20_baseline, save_results, stamp, time_runner_pairs

from deploykit.bench import environment, runner_accuracy
from deploykit.export import export_onnx
from deploykit.host.progress import log
from deploykit.models import file_size_bytes, find_first_last
from deploykit.quant import build_quantized
from deploykit.recipe import QuantizeSpec
from deploykit.runtimes import make_runner

OUT = Path(__file__).resolve().parent / "results" / "r20_nncf_peer.json"
SHAPE = (3, 32, 32)
RUNTIMES = ("onnxruntime-cpu", "openvino-cpu")


def nncf_quantize(float_onnx: Path, out: Path, calib: list[np.ndarray],
                  ignore: list[str] | None = None) -> Path:
    """NNCF's PTQ of the ONNX file (its defaults; ``ignore``: ONNX node names left float)."""
    import nncf
    import onnx

    model = onnx.load(str(float_onnx))
    name = model.graph.input[0].name
    dataset = nncf.Dataset(calib, lambda x: {name: x})
    kwargs = {"ignored_scope": nncf.IgnoredScope(names=ignore)} if ignore else {}
    quantized = nncf.quantize(model, dataset, subset_size=sum(len(x) for x in calib),
                              target_device=nncf.TargetDevice.CPU, **kwargs)
    onnx.save(quantized, str(out))
    return out


def first_last_nodes(float_onnx: Path) -> list[str]:
    """The ONNX names of the first conv and the last Gemm/MatMul/Conv node."""
    import onnx

    nodes = [n for n in onnx.load(str(float_onnx)).graph.node
             if n.op_type in ("Conv", "Gemm", "MatMul")]
    return [nodes[0].name, nodes[-1].name]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(2)
    loaders = cifar_loaders()
    base, meta = r20_baseline(loaders, log)
    base = base.eval()
    tmp = Path(tempfile.mkdtemp())
    calib_t = [x for x, _ in loaders.calib]
    calib = [x.numpy().astype(np.float32) for x in calib_t]
    first, last = find_first_last(base, SHAPE)
    files: dict[str, tuple[Path, str]] = {}
    files["float"] = (export_onnx(base, SHAPE, tmp / "float.onnx"), "fp32")
    for target in ("onnxruntime-cpu", "openvino"):
        q = build_quantized(base, QuantizeSpec(target=target), [first, last], calib_t)
        files[f"deploykit PTQ ({target}), first/last float"] = (
            export_onnx(q, SHAPE, tmp / f"deploykit-{target}.onnx"), "int8")
    log("NNCF: quantizing (defaults)")
    files["NNCF PTQ (defaults)"] = (nncf_quantize(files["float"][0], tmp / "nncf.onnx", calib),
                                   "int8")
    log("NNCF: quantizing (first/last ignored)")
    files["NNCF PTQ, first/last float"] = (
        nncf_quantize(files["float"][0], tmp / "nncf-fl.onnx", calib,
                      first_last_nodes(files["float"][0])), "int8")
    runners = {(label, rt): make_runner(rt, onnx_path=path, precision=prec)
               for label, (path, prec) in files.items() for rt in RUNTIMES}
    results = {"task": "R20: deploykit PTQ vs NNCF PTQ", "date": stamp(),
               "environment": environment(2), "baseline": meta, "calib_images":
               sum(len(x) for x in calib), "rows": []}
    top1 = {}
    for key, runner in runners.items():
        log(f"scoring {key[0]} on {key[1]}")
        top1[key] = runner_accuracy(runner, loaders.val)["top1_pct"]
    timed = time_runner_pairs(runners, SHAPE, args.batches, args.iterations, rounds=6)
    p50 = {k: {b: st.p50_ms for b, st in by_batch.items()} for k, by_batch in timed.items()}
    for (label, rt), ms in p50.items():
        row = {"candidate": label, "runtime": rt, "precision": files[label][1],
               "onnx_bytes": file_size_bytes(files[label][0]), "top1_pct": top1[(label, rt)],
               "p50_ms": {str(b): v for b, v in ms.items()},
               "speedup_vs_float_same_runtime": {str(b): p50[("float", rt)][b] / v
                                                 for b, v in ms.items()}}
        results["rows"].append(row)
        log(f"{label} on {rt}: top-1 {row['top1_pct']:.2f}, " + ", ".join(
            f"b{b} {v:.3f} ms ({row['speedup_vs_float_same_runtime'][str(b)]:.2f}x)"
            for b, v in ms.items()))
    save_results(args.out, results)


if __name__ == "__main__":
    main()
