"""INT8 in transformer blocks: which Linear layers pay in ONNX Runtime on this CPU.

A DeiT-Tiny-shaped torchvision VisionTransformer (224x224, patch 16, 12 layers, width 192,
3 heads; random weights: only speed and structure matter here) is exported three ways and
timed alternately in ONNX Runtime's CPU EP at batch 1 and 8:

- ``float``: the model as is;
- ``int8-mlp``: INT8 MLP Linear layers, attention float (what deploykit did before: PyTorch's
  ``nn.MultiheadAttention`` applies its packed q/k/v projection functionally);
- ``int8-all``: also the q/k/v and output projections in INT8 (``QuantAttention``).

LayerNorm, softmax, GELU and the attention products stay float in both. The patch embedding
and the head stay float (deploykit's default first/last). Also recorded: how ONNX Runtime runs
the MatMuls (integer kernels or float) and the INT8 simulation's error against float.

    python benchmarks/zoo/transformer_int8.py [--out benchmarks/zoo/results/transformer_int8.json]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from torchvision.models.vision_transformer import VisionTransformer

from deploykit.bench import environment, time_onnx_files
from deploykit.export import export_onnx
from deploykit.quant import SCHEMES, compute_layers, prepare

SHAPE = (3, 224, 224)
OUT = Path(__file__).resolve().parent / "results" / "transformer_int8.json"


def deit_tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    m = VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=3,
                          hidden_dim=192, mlp_dim=768, num_classes=1000).eval()
    torch.nn.init.normal_(m.heads.head.weight, std=0.02)   # torchvision zero-inits the head
    return m


def kernels(path: Path, tmp: Path) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime runs (after its QDQ fusions)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp / f"{path.stem}.opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    keys = ("MatMul", "FusedMatMul", "Gemm", "MatMulIntegerToFloat", "QLinearMatMul",
            "DynamicQuantizeMatMul", "MatMulInteger")
    return {k: ops[k] for k in keys if ops.get(k)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args()
    model = deit_tiny()
    layers = compute_layers(model)
    attention = [n for n in layers if ".self_attention." in n]
    calib = [torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = model(x)
    row: dict = {"date": datetime.date.today().isoformat(), "environment": environment(),
                 "model": "torchvision VisionTransformer, DeiT-Tiny shape, random weights"}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        paths = {"float": export_onnx(model, SHAPE, tmp / "float.onnx")}
        for name, keep in (("int8-mlp", attention), ("int8-all", [])):
            qm = prepare(model, SCHEMES["onnxruntime-cpu"], ["conv_proj", "heads.head", *keep],
                         "percentile")
            qm.calibrate(calib)
            with torch.no_grad():
                err = float((qm(x) - ref).abs().max() / ref.abs().max())
            paths[name] = export_onnx(qm, SHAPE, tmp / f"{name}.onnx")
            row[name] = {"int8_layers": sum(p == "int8" for p in qm.layer_precision.values()),
                         "error_vs_float_range": err}
        for name, p in paths.items():
            row.setdefault(name, {})["kernels"] = kernels(p, tmp)
        p50 = time_onnx_files(paths, SHAPE, [1, 8], iterations=args.iterations)
    for name in paths:
        row[name]["p50_ms"] = p50[name]
        row[name]["speedup_vs_float"] = {b: p50["float"][b] / p50[name][b] for b in p50[name]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2))
    env = row["environment"]
    print(f"CPU: {env['cpu_model']} ({', '.join(env['cpu_int8_features'])}), "
          f"{env['cpu_cores']} cores")
    print("| variant | INT8 linears | ORT matmul kernels | b1 ms | b8 ms | speed-up b1 / b8 |")
    print("|---|---:|---|---:|---:|---:|")
    for name in paths:
        r = row[name]
        sp = r["speedup_vs_float"]
        print(f"| {name} | {r.get('int8_layers', 0)} | {r['kernels']} | {r['p50_ms'][1]:.2f} | "
              f"{r['p50_ms'][8]:.2f} | {sp[1]:.2f}x / {sp[8]:.2f}x |")


if __name__ == "__main__":
    main()
