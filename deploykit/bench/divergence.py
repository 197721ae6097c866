"""Where an exported model first departs from PyTorch: layer-by-layer comparison.

The dynamo exporter records, on every ONNX node, the PyTorch module it came from
(``pkg.torch.onnx.name_scopes``). For each module, the last node inside its scope produces the
module's output. Those tensors are marked as extra graph outputs, the same input goes through
ONNX Runtime and through the PyTorch model (forward hooks), and the tensors are compared in the
graph's order: the first whose error, relative to the reference tensor's range, exceeds the
tolerance is the divergence named in parity errors. The marked model runs on the runtime that
failed: ONNX Runtime (any execution provider) or a TensorRT engine built from it, whose network
outputs are the marked tensors (Polygraphy's "mark all" approach; marking stops TensorRT from
fusing across those tensors, so an error that only arises inside a fusion shows at the fused
block's output).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["Divergence", "find_divergence", "module_outputs"]


@dataclass(frozen=True)
class Divergence:
    """The first module whose exported output disagrees with PyTorch's."""

    module: str
    onnx_node: str
    op_type: str
    tensor: str
    max_abs_error: float
    error_vs_range: float

    def __str__(self) -> str:
        return (f"first diverging tensor: {self.tensor!r} = output of module {self.module!r} "
                f"(ONNX node {self.onnx_node}, {self.op_type}): max abs error "
                f"{self.max_abs_error:.3g}, {self.error_vs_range:.3g} of its range")


def _scopes(node) -> list[str]:
    """The modules (outermost first) a node was exported from."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            return [s for s in scopes[:-1] if s]   # the last entry names the op itself
    return []


def module_outputs(onnx_model) -> list[tuple[str, str, str, str]]:
    """``(module, tensor, node name, op type)`` per module, in graph order: the output of the
    last node inside each module's scope, its submodules included."""
    last: dict[str, tuple[int, str, str, str]] = {}
    for i, node in enumerate(onnx_model.graph.node):
        if not node.output:
            continue
        for mod in _scopes(node):
            last[mod] = (i, node.output[0], node.name, node.op_type)
    return [(m, t, n, op) for m, (_, t, n, op) in sorted(last.items(), key=lambda kv: kv[1][0])]


def find_divergence(model: nn.Module, onnx_path: str | Path, x: np.ndarray,
                    tolerance: float = 1e-3, threads: int = 2,
                    runtime: str = "onnxruntime-cpu", precision: str = "fp32"
                    ) -> Divergence | None:
    """Compare every module's output between PyTorch and ``runtime`` on ``x``.

    ``runtime``: any ONNX-consuming runtime of :func:`deploykit.bench.runners.make_runner`
    (``onnxruntime-cpu``, ``onnxruntime-cuda``, ``onnxruntime-tensorrt``, ``tensorrt``).

    Returns:
        The first module (in graph order) whose max error exceeds ``tolerance`` times the
        range (max |value|) of PyTorch's output, or ``None`` when all agree or the ONNX file
        carries no module metadata (exported by another tool).
    """
    import tempfile

    import onnx

    from deploykit.runtimes import make_runner

    proto = onnx.load(str(onnx_path))
    outs = module_outputs(proto)
    modules = dict(model.named_modules())
    outs = [o for o in outs if o[0] in modules]
    if not outs:
        return None
    existing = {o.name for o in proto.graph.output}
    for _, tensor, _, _ in outs:
        if tensor not in existing:
            proto.graph.output.append(onnx.ValueInfoProto(name=tensor))
            existing.add(tensor)
    with tempfile.TemporaryDirectory() as tmp:
        marked = Path(tmp) / "marked.onnx"
        onnx.save(proto, str(marked))
        runner = make_runner(runtime, onnx_path=marked, threads=threads, precision=precision,
                             max_batch=len(x))
        got = runner.run_all(x)
    captured: dict[str, torch.Tensor] = {}
    hooks = [modules[m].register_forward_hook(
        lambda _m, _i, out, m=m: captured.__setitem__(m, out.detach().clone())
        if isinstance(out, torch.Tensor) else None) for m, *_ in outs]
    try:
        with torch.inference_mode():
            model.eval()(torch.from_numpy(np.ascontiguousarray(x)))
    finally:
        for h in hooks:
            h.remove()
    for mod, tensor, node, op in outs:
        ref = captured.get(mod)
        if ref is None or tensor not in got or tuple(ref.shape) != got[tensor].shape:
            continue
        ref_np = ref.float().numpy()
        err = float(np.abs(ref_np - got[tensor].astype(np.float32)).max())
        scale = float(np.abs(ref_np).max()) or 1.0
        if err / scale > tolerance:
            return Divergence(mod, node, op, tensor, err, err / scale)
    return None
