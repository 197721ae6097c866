"""Turn a float model into a fake-quant one: trace, fold BatchNorm, place quantizers.

Placement (the same for both targets, where TensorRT and ONNX Runtime fuse Q/DQ):

- every conv/linear that is not kept float gets per-channel INT8 weights and a quantizer on
  its input;
- both inputs of each residual addition get a quantizer, so the addition and the layers that
  feed it run in INT8 too;
- a tensor feeding several consumers has one quantizer, shared by all of them;
- the output of every INT8 layer and addition (after its ReLU, if any) passes through a
  quantizer, even where the next layer is float: ONNX Runtime only fuses DQ -> Conv -> Q into
  an integer convolution. Without it, mobilenet_v2's last 1x1 conv (before the float
  classifier) ran as a float conv on dequantized weights;
- a max-pool whose output is quantized: for ``tensorrt`` it gets the same quantizer (one scale
  and zero point) on its input too, so the pool runs in INT8. Max-pooling commutes with a
  monotone quantizer, so the result is unchanged. For ``onnxruntime-cpu`` the pool stays
  float: ONNX Runtime's uint8 max-pool is a slow generic kernel (on an AVX-512 Xeon, 2-3 ms
  at batch 1 behind resnet18's float stem, against 0.1 ms in float; the chain ran 5.0 ms vs
  3.0 ms). ONNX Runtime's QDQ propagation would move the quantizer above the pool anyway, so
  where the pool's input is a ReLU output (non-negative), a ReLU is placed between the pool
  and its quantizer: exact, since the pool's output is non-negative too; it stops the
  propagation, and ONNX Runtime then folds it into the quantizer.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import operator
from collections.abc import Iterable

import torch
from torch import fx, nn

from deploykit.errors import ModelError
from deploykit.quant.attention import QuantAttention, splittable
from deploykit.quant.calib import make_calibrator
from deploykit.quant.modules import ActQuant, QuantLayer, qdq_export
from deploykit.quant.scheme import QuantScheme

__all__ = ["QuantizedModel", "compute_layers", "prepare", "resolve_keep_float"]

_ADDS = {operator.add, operator.iadd, torch.add}
_MAXPOOLS = {torch.nn.functional.max_pool2d, torch.max_pool2d}
_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_RELU_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6}
_PASSTHROUGH_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout)
_PASSTHROUGH_FUNCTIONS = {"dropout", "dropout2d", "stochastic_depth", "drop_path"}


def compute_layers(model: nn.Module) -> list[str]:
    """Names of the conv and linear modules: the layers quantization decides about (with the
    q/k/v projections of each ``nn.MultiheadAttention`` it can split, as ``<name>.q`` ...)."""
    names = []
    for n, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention) and splittable(m):
            names += [f"{n}.{p}" for p in ("q", "k", "v")]
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            names.append(n)
    return names


def resolve_keep_float(model: nn.Module, patterns: Iterable[str], first_last: tuple[str, str]
                       ) -> list[str]:
    """Layer names matched by ``patterns``: ``first``, ``last``, ``depthwise`` (every
    depthwise convolution: one group per input channel, whose integer kernels pay least) or
    fnmatch module-name patterns.

    Raises:
        ModelError: a pattern that matches no conv/linear layer (a typo would otherwise
            silently quantize the layer the user meant to protect).
    """
    layers = compute_layers(model)
    keep: list[str] = []
    for pat in patterns:
        names = ([first_last[0]] if pat == "first" else [first_last[1]] if pat == "last"
                 else [n for n in layers if _depthwise(model, n)] if pat == "depthwise"
                 else [n for n in layers if fnmatch.fnmatchcase(n, pat)])
        names = [n for n in names if n in layers]
        if not names:
            raise ModelError(f"quantize.keep_float: {pat!r} matches no conv/linear layer; "
                             f"layers are e.g. {layers[:4]} ... {layers[-2:]}")
        keep += [n for n in names if n not in keep]
    return keep


def _depthwise(model: nn.Module, name: str) -> bool:
    try:
        m = model.get_submodule(name)
    except AttributeError:   # a split attention projection
        return False
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


class QuantizedModel(nn.Module):
    """The fake-quant model with its bookkeeping: which layers are INT8 and which float."""

    def __init__(self, graph_module: fx.GraphModule, layer_precision: dict[str, str],
                 scheme: QuantScheme):
        super().__init__()
        self.net = graph_module
        self.layer_precision = layer_precision
        self.scheme = scheme

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def export_context(self) -> contextlib.AbstractContextManager:
        """The ONNX exporter's hook: within it the quantizers emit explicit Q/DQ ops."""
        return qdq_export(self)

    def float_equivalent(self) -> nn.Module:
        """The same graph with plain layers and no quantizers, for counting MACs and params
        (counters hook nn.Conv2d/nn.Linear, which QuantLayer calls functionally)."""
        gm = copy.deepcopy(self.net)
        replaced: list[str] = []
        for name, m in list(gm.named_modules()):
            if any(name.startswith(f"{r}.") for r in replaced):
                continue   # inside an attention block already swapped back
            if isinstance(m, QuantAttention):
                gm.set_submodule(name, m.float_module())
                replaced.append(name)
            elif isinstance(m, QuantLayer):
                gm.set_submodule(name, m.layer)
            elif isinstance(m, ActQuant):
                gm.set_submodule(name, nn.Identity())
        return gm

    def act_quants(self) -> list[ActQuant]:
        return [m for m in self.modules() if isinstance(m, ActQuant)]

    def quant_layers(self) -> dict[str, QuantLayer]:
        return {n.removeprefix("net."): m for n, m in self.named_modules()
                if isinstance(m, QuantLayer)}

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> int:
        """Observe activations on ``batches`` and fix every quantizer's range; returns images."""
        self.eval()
        for q in self.act_quants():
            q.start_calibration()
        n = 0
        for x in batches:
            self(x)
            n += len(x)
        if n == 0:
            raise ModelError("quantize: the calibration set is empty; raise data.calib_samples")
        names = {m: name for name, m in self.named_modules()}
        for q in self.act_quants():
            q.finish_calibration(names[q])
        return n

    def set_bn_frozen(self, frozen: bool) -> None:
        for m in self.quant_layers().values():
            m.bn_frozen = frozen

    def set_observers(self, updating: bool) -> None:
        """QAT: ranges follow a moving average of batch extremes while ``updating``."""
        for q in self.act_quants():
            q.ema = updating


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantAttention) or super().is_leaf_module(m, qualname)


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        graph = _Tracer().trace(model)
        return fx.GraphModule(model, graph, type(model).__name__)
    except Exception as e:
        raise ModelError(
            f"quantize: torch.fx cannot trace {type(model).__name__} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); quantization needs a model without "
            "data-dependent Python control flow in forward()") from e


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _is_maxpool(gm: fx.GraphModule, node: fx.Node) -> bool:
    return isinstance(_module(gm, node), nn.MaxPool2d) or (
        node.op == "call_function" and node.target in _MAXPOOLS)


def _is_activation(gm: fx.GraphModule, node: fx.Node) -> bool:
    """ReLU or ReLU6: elementwise, non-negative output."""
    return isinstance(_module(gm, node), _RELU_MODULES) or (
        node.op == "call_function" and node.target in _RELU_FUNCTIONS)


def _is_passthrough(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Identity in the traced (eval) graph: nn.Identity, dropout, stochastic depth."""
    return isinstance(_module(gm, node), _PASSTHROUGH_MODULES) or (
        node.op == "call_function"
        and getattr(node.target, "__name__", "") in _PASSTHROUGH_FUNCTIONS)


def _activation_chain_end(gm: fx.GraphModule, node: fx.Node) -> fx.Node:
    """``node``, or the last of the ReLU/ReLU6 and pass-through nodes that follow it one by
    one. Quantizing there, not before a pass-through, keeps one quantizer per tensor: a
    quantizer before torchvision's stochastic depth and another after it (on a residual
    addition's input) export as Q -> DQ -> Q -> DQ, which ONNX Runtime's optimizer merges
    into one pair with other parameters than the PyTorch model computes with (EfficientNet's
    INT8 ONNX disagreed with its fake-quant model by half the logit range)."""
    while len(node.users) == 1:
        user = next(iter(node.users))
        if not (_is_activation(gm, user) or _is_passthrough(gm, user)):
            break
        node = user
    return node


def prepare(model: nn.Module, scheme: QuantScheme, keep_float: Iterable[str],
            calibration: str = "percentile", bins: int = 2048, percentile: float = 99.99
            ) -> QuantizedModel:
    """A fake-quant copy of ``model`` (in ``float`` mode until :meth:`QuantizedModel.calibrate`).

    Args:
        model: the float model (not modified).
        scheme: activation scheme of the target.
        keep_float: exact names of conv/linear layers to leave in float.
        calibration, bins, percentile: the activation calibrator.
    """
    keep = set(keep_float)

    def new_quant() -> ActQuant:
        return ActQuant(scheme, lambda: make_calibrator(calibration, scheme, bins, percentile))

    model = copy.deepcopy(model).eval()
    precision: dict[str, str] = {}
    # 0. attention blocks -> QuantAttention (INT8 projections), unless one is kept float
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.MultiheadAttention) and splittable(mod):
            parts = [f"{name}.{p}" for p in ("q", "k", "v", "out_proj")]
            float_ = any(p in keep for p in parts)
            if not float_:
                model.set_submodule(name, QuantAttention(mod, new_quant,
                                                          scheme.per_channel_weights,
                                                          scheme.weight_qmax))
            precision.update(dict.fromkeys(parts, "fp32" if float_ else "int8"))
    gm = _trace(model)
    graph = gm.graph

    # 1. conv/linear (+ a BatchNorm that only it feeds) -> QuantLayer, unless kept float
    for node in list(graph.nodes):
        mod = _module(gm, node)
        if not isinstance(mod, (nn.Conv2d, nn.Linear)):
            continue
        name = str(node.target)
        if name in precision:   # an attention block's output projection, decided above
            continue
        if name in keep:
            precision[name] = "fp32"
            continue
        bn = None
        users = list(node.users)
        if isinstance(mod, nn.Conv2d) and len(users) == 1 and isinstance(
                _module(gm, users[0]), nn.BatchNorm2d):
            bn_node = users[0]
            bn = _module(gm, bn_node)
            bn_node.replace_all_uses_with(node)
            graph.erase_node(bn_node)
        gm.add_submodule(name, QuantLayer(mod, bn, scheme.per_channel_weights,  # in place
                                          scheme.weight_qmax))
        precision[name] = "int8"

    # 2. quantizers on the inputs of quantized layers and of residual additions, one per tensor
    quantizers: dict[fx.Node, fx.Node] = {}

    def quantized(arg: fx.Node) -> fx.Node:
        if arg not in quantizers:
            qname = f"act_quant_{len(quantizers)}"
            gm.add_submodule(qname, new_quant())
            with graph.inserting_after(arg):
                quantizers[arg] = graph.call_module(qname, (arg,))
        return quantizers[arg]

    for node in list(graph.nodes):
        if node in quantizers.values():
            continue
        targets: list[fx.Node] = []
        if isinstance(_module(gm, node), QuantLayer):
            targets = [node.args[0]] if isinstance(node.args[0], fx.Node) else []
        elif node.op == "call_function" and node.target in _ADDS:
            tensor_args = [a for a in node.args[:2] if isinstance(a, fx.Node)]
            if len(tensor_args) == 2:
                targets = tensor_args
        for arg in targets:
            node.replace_input_with(arg, quantized(arg))

    # 3. the output of every INT8 layer or addition ends in a quantizer, so that runtimes fuse
    #    it into an integer kernel (see the module notes)
    for node in list(graph.nodes):
        if isinstance(_module(gm, node), QuantLayer) or (
                node.op == "call_function" and node.target in _ADDS
                and all(a in quantizers.values() for a in node.args[:2])):
            end = _activation_chain_end(gm, node)
            if end not in quantizers and end.users:
                q = quantized(end)
                end.replace_all_uses_with(q, delete_user_cb=lambda u, q=q: u is not q)

    # 4. max-pools whose output is quantized (see the module notes)
    for src, qnode in list(quantizers.items()):
        inp = src.args[0] if _is_maxpool(gm, src) and src.args else None
        if not isinstance(inp, fx.Node):
            continue
        if scheme.int8_maxpool:
            if inp not in quantizers and len(inp.users) == 1:
                with graph.inserting_after(inp):
                    pre = graph.call_module(qnode.target, (inp,))
                src.replace_input_with(inp, pre)
        elif _is_activation(gm, inp):   # non-negative input: a ReLU after the pool is exact
            with graph.inserting_after(src):
                guard = graph.call_function(torch.relu, (src,))
            qnode.replace_input_with(src, guard)
    graph.lint()
    gm.recompile()
    return QuantizedModel(gm, precision, scheme)
