"""R20 quantization benchmark (CIFAR-10 ResNet-20): accuracy and ONNX Runtime CPU latency.

Float vs PTQ with each calibrator vs QAT, each INT8 model with the first/last layers float and
with every layer INT8 (target onnxruntime-cpu), plus one chain per MACs target: prune (l1,
round_to 16) -> KD recovery -> PTQ (and QAT). Top-1 is the exported QDQ model's in ONNX Runtime
on the 10,000 test images; latency is p50 at batch 1 and 64, 2 threads, all candidates timed
alternately at the end.

Usage: python benchmarks/quantize/run_r20.py [--qat-epochs 1] [--chain-recovery-epochs 5]
       [--chain-qat-epochs 1] [--chain-macs-ratios 0.5 0.62] [--chain-global] [--out F]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import RECOVERY_TRAIN, cifar_loaders, ort_latency, r20_baseline, save_results, stamp

from deploykit.bench import environment, runner_accuracy
from deploykit.distill import kd_loss_fn
from deploykit.export import export_onnx
from deploykit.host.progress import log
from deploykit.models import count_macs_params, file_size_bytes, find_first_last
from deploykit.prune import prune_to_macs
from deploykit.quant import build_quantized, qat_finetune
from deploykit.recipe import PruneSpec, QuantizeSpec
from deploykit.runtimes import OrtRunner
from deploykit.train import fit, seed_everything

OUT = Path(__file__).resolve().parent / "results" / "r20_schemes_and_chain.json"
SHAPE = (3, 32, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calibrators", nargs="+", default=["minmax", "percentile", "entropy",
                                                        "mse"])
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--qat-calibrator", default="percentile")
    ap.add_argument("--chain-recovery-epochs", type=int, default=5)
    ap.add_argument("--chain-qat-epochs", type=int, default=1)
    ap.add_argument("--chain-macs-ratios", nargs="+", type=float, default=[0.5, 0.62],
                    help="one chain per MACs target (each costs its recovery and QAT epochs)")
    ap.add_argument("--chain-round-to", type=int, default=16,
                    help="channel multiple of the chain's pruning: ONNX Runtime's INT8 convs are "
                         "slower than float at 8 channels, faster at 16")
    ap.add_argument("--chain-global", action="store_true",
                    help="rank channels globally: with round_to 16, local ranking cannot prune "
                         "R20 by less than 0.62x MACs (every group loses at least 16 channels)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(2)
    seed_everything(0)
    tmp = Path(tempfile.mkdtemp())
    loaders = cifar_loaders()
    base, _ = r20_baseline(loaders, log)
    base.eval()
    fl = find_first_last(base, SHAPE)
    calib = [x for x, _ in loaders.calib]
    res = {"date": stamp(), "environment": environment(2),
           "calib_images": sum(len(x) for x in calib), "rows": []}
    paths: dict[str, Path] = {}

    def record(label: str, model: torch.nn.Module, **extra) -> None:
        t0 = time.perf_counter()
        paths[label] = export_onnx(model, SHAPE, tmp / f"{label}.onnx")
        acc = runner_accuracy(OrtRunner(paths[label], threads=2), loaders.val)["top1_pct"]
        macs, params = count_macs_params(model, SHAPE)
        row = {"candidate": label, "ort_top1_pct": acc, "macs": macs, "params": params,
               "onnx_bytes": file_size_bytes(paths[label]), **extra,
               "eval_seconds": time.perf_counter() - t0}
        res["rows"].append(row)
        log(f"{label}: ORT top-1 {acc:.2f}%, {row['onnx_bytes'] / 1e6:.3f} MB")
        save_results(args.out, res)

    record("float", base)
    for method in args.calibrators:
        for keep_name, keep in (("firstlast-float", list(fl)), ("all-int8", [])):
            spec = QuantizeSpec(calibration={"method": method})
            t0 = time.perf_counter()
            qm = build_quantized(base, spec, keep, calib)
            record(f"ptq-{method}-{keep_name}", qm, calib_seconds=time.perf_counter() - t0)

    if args.qat_epochs:   # QAT with the default policy: first/last layers float
        spec = qat_spec(args.qat_calibrator, args.qat_epochs)
        qm = build_quantized(base, spec, list(fl), calib)
        fr = qat_finetune(qm, base, loaders, spec.qat)
        record(f"qat-{args.qat_calibrator}-firstlast-float", qm, qat_epochs=args.qat_epochs,
               qat_seconds=fr.seconds)

    base_macs = count_macs_params(base, SHAPE)[0]
    for ratio in args.chain_macs_ratios:
        chain(ratio, base, base_macs, fl, loaders, calib, args, record)

    log("timing every candidate alternately (ORT CPU, 2 threads)")
    p50 = ort_latency(paths, SHAPE, batches=(1, 64), iterations=60)
    for row in res["rows"]:
        c = row["candidate"]
        row["p50_ms"] = {str(b): v for b, v in p50[c].items()}
        row["speedup"] = {str(b): p50["float"][b] / v for b, v in p50[c].items()}
    save_results(args.out, res)
    for row in res["rows"]:
        print(f"| {row['candidate']} | {row['ort_top1_pct']:.2f} | "
              f"{row['ort_top1_pct'] - res['rows'][0]['ort_top1_pct']:+.2f} | "
              f"{row['onnx_bytes'] / 1e6:.3f} | {row['p50_ms']['1']:.3f} | "
              f"{row['p50_ms']['64']:.2f} | {row['speedup']['1']:.2f}x | "
              f"{row['speedup']['64']:.2f}x |")


def qat_spec(calibrator: str, epochs: int) -> QuantizeSpec:
    """QAT from ``calibrator``'s ranges; BatchNorm and observers frozen after the first epoch."""
    return QuantizeSpec(mode="qat", calibration={"method": calibrator},
                        qat={"epochs": epochs, "freeze_bn_after": 1, "freeze_observers_after": 1})


def chain(ratio: float, base, base_macs: int, fl, loaders, calib, args, record) -> None:
    """Prune to ``ratio`` of the MACs, recover with KD from ``base``, then PTQ (and QAT)."""
    tag = f"chain{ratio:g}" + ("-global" if args.chain_global else "")
    prune_spec = PruneSpec(target={"macs_ratio": ratio}, round_to=args.chain_round_to,
                           global_ranking=args.chain_global)
    pruned, _, _ = prune_to_macs(base, SHAPE, prune_spec, [fl[1]], int(base_macs * ratio),
                                 0.03 * base_macs)
    widths = {n: m.out_channels for n, m in pruned.named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    rec = RECOVERY_TRAIN.model_copy(update={"epochs": args.chain_recovery_epochs})
    fr = fit(pruned, loaders.train, loaders.val, rec, None, desc=f"{tag} recovery",
             loss_fn=kd_loss_fn(base, 0.5, 4.0))
    record(f"{tag}-pruned-float", pruned.eval(), recovery_epochs=rec.epochs,
           recovery_seconds=fr.seconds, round_to=args.chain_round_to,
           global_ranking=args.chain_global, widths=widths)
    for keep_name, keep in (("firstlast-float", list(fl)), ("all-int8", [])):
        qm = build_quantized(pruned, QuantizeSpec(), keep, calib)
        record(f"{tag}-prune-ptq-percentile-{keep_name}", qm)
    if args.chain_qat_epochs:   # QAT of the pruned model, the unpruned float model teaching
        spec = qat_spec(args.qat_calibrator, args.chain_qat_epochs)
        qm = build_quantized(pruned, spec, list(fl), calib)
        fr = qat_finetune(qm, base, loaders, spec.qat)
        record(f"{tag}-prune-qat-{args.qat_calibrator}-firstlast-float", qm,
               qat_epochs=args.chain_qat_epochs, qat_seconds=fr.seconds)


if __name__ == "__main__":
    main()
