"""INT8 quantization: QDQ graph structure, schemes, PyTorch/ONNX parity, sensitivity, fallback."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from deploykit.errors import ModelError
from deploykit.export import export_onnx
from deploykit.models import build_model, find_first_last, parse_model_ref
from deploykit.quant import (
    SCHEMES,
    ActQuant,
    Fp16Model,
    build_quantized,
    compute_layers,
    layer_sensitivity,
    prepare,
    resolve_keep_float,
)
from deploykit.recipe import QuantizeSpec
from deploykit.runtimes import OrtRunner
from deploykit.stages.quantize import check

SHAPE = (3, 32, 32)


def _model(ref: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(parse_model_ref(ref, 10)).eval()


def _calib(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, *SHAPE, generator=g) for _ in range(n)]


def _quantize(model: nn.Module, target: str = "onnxruntime-cpu", method: str = "minmax",
              keep: list[str] | None = None):
    spec = QuantizeSpec(target=target, calibration={"method": method})
    if keep is None:
        keep = resolve_keep_float(model, spec.keep_float, find_first_last(model, SHAPE))
    return build_quantized(model, spec, keep, _calib())


def _graph(qm, tmp_path) -> tuple[onnx.GraphProto, str]:
    path = export_onnx(qm, SHAPE, tmp_path / "q.onnx")
    return onnx.load(str(path)).graph, str(path)


def _producers(g: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in g.node for o in n.output}


def _inits(g: onnx.GraphProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in g.initializer}


@pytest.mark.parametrize("ref", ["resnet20", "torchvision:mobilenet_v2"])
def test_first_and_last_float_every_other_layer_per_channel_int8(ref, tmp_path):
    model = _model(ref)
    qm = _quantize(model)
    g, _ = _graph(qm, tmp_path)
    prod, inits = _producers(g), _inits(g)
    layers = [n for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(layers) == len(compute_layers(model))
    float_layers, int8_layers = [], []
    for n in layers:
        w = n.input[1]
        dq = prod.get(w)
        if dq is None:  # weight straight from a float initializer
            assert inits[w].dtype == np.float32
            float_layers.append(n)
            continue
        assert dq.op_type == "DequantizeLinear"
        w_q, scale = inits[dq.input[0]], inits[dq.input[1]]
        assert w_q.dtype == np.int8 and w_q.min() >= -127
        out_ch = w_q.shape[0]
        assert scale.shape == (out_ch,), "weights must be quantized per output channel"
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert axis == 0
        int8_layers.append(n)
    assert float_layers == [layers[0], layers[-1]], "exactly the stem and the classifier"
    assert len(int8_layers) == len(layers) - 2
    assert sorted(qm.layer_precision.values()).count("fp32") == 2


def test_tensorrt_scheme_is_signed_and_symmetric(tmp_path):
    g, _ = _graph(_quantize(_model("resnet20"), target="tensorrt"), tmp_path)
    inits = _inits(g)
    qdq = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name


def test_onnxruntime_scheme_has_uint8_activations_int8_weights(tmp_path):
    g, _ = _graph(_quantize(_model("resnet20")), tmp_path)
    inits = _inits(g)
    acts = [inits[n.input[2]].dtype for n in g.node if n.op_type == "QuantizeLinear"]
    weights = [inits[n.input[2]].dtype for n in g.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert acts and set(acts) == {np.dtype(np.uint8)}
    assert weights and set(weights) == {np.dtype(np.int8)}


def test_residual_add_inputs_are_quantized(tmp_path):
    g, _ = _graph(_quantize(_model("resnet20")), tmp_path)
    prod = _producers(g)
    adds = [n for n in g.node if n.op_type == "Add" and all(i in prod for i in n.input)]
    assert len(adds) == 9  # one per residual block of ResNet-20
    for n in adds:
        assert [prod[i].op_type for i in n.input] == ["DequantizeLinear"] * 2


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_ptq_onnx_matches_fakequant_model(method, tmp_path):
    qm = _quantize(_model("resnet20"), method=method)
    _, path = _graph(qm, tmp_path)
    x = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = qm(x).numpy()
    out = OrtRunner(path)(x.numpy())
    scale = np.abs(ref).max()
    assert np.abs(out - ref).max() < 0.05 * scale  # integer kernels round differently
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_calibrators_differ_and_clip_outliers():
    model = _model("resnet20")
    ranges = {}
    for method in ("minmax", "percentile", "entropy", "mse"):
        qm = _quantize(model, method=method)
        ranges[method] = float(qm.act_quants()[0].hi)
    assert ranges["minmax"] >= max(ranges["percentile"], ranges["entropy"], ranges["mse"])
    assert len({round(v, 6) for v in ranges.values()}) >= 3


def test_fake_quant_is_close_to_float_but_not_equal():
    model = _model("resnet20")
    qm = _quantize(model)
    x = _calib(1, seed=9)[0]
    with torch.no_grad():
        f, q = model(x), qm(x)
    err = (f - q).abs().max() / f.abs().max()
    assert 0 < err < 0.1


def test_fp16_model_exports_and_matches(tmp_path):
    model = _model("resnet20")
    path = export_onnx(Fp16Model(model), SHAPE, tmp_path / "fp16.onnx")
    g = onnx.load(str(path)).graph
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert g.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_w = [i for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(conv_w) >= len(compute_layers(model))
    x = _calib(1)[0]
    with torch.no_grad():
        ref = model(x).numpy()
    out = OrtRunner(path)(x.numpy())
    assert np.abs(out - ref).max() < 5e-2


def _damage(model: nn.Module, block: str) -> str:
    """Make ``block``.conv2 fragile under INT8 without changing the float model: its input
    channel 0 is always zero (bn1 zeroes it), and the weights reading that channel are huge.
    Float ignores them; per-channel INT8 scales to them and rounds every other weight to 0."""
    b = model.get_submodule(block)
    with torch.no_grad():
        b.bn1.weight[0] = 0.0
        b.bn1.bias[0] = 0.0
        w = b.conv2.weight
        w[:, 0] = 500 * w.abs().amax()
        b.bn2.weight.mul_(10.0)  # and let this branch dominate the residual sum
    return f"{block}.conv2"


def test_sensitivity_ranks_a_damaged_layer_first():
    model = _model("resnet20")
    victim = _damage(model, "layer2.1")
    spec = QuantizeSpec(calibration={"method": "minmax"})
    keep = resolve_keep_float(model, spec.keep_float, find_first_last(model, SHAPE))
    calib = _calib()
    layers = ["layer1.0.conv1", "layer1.2.conv2", "layer2.0.conv1", victim, "layer3.0.conv1",
              "layer3.2.conv2"]  # a sample of layers keeps the test quick
    batches = [(x, torch.zeros(len(x), dtype=torch.long)) for x in _calib(2, seed=3)]
    for method in ("only", "all_but"):
        ranking = layer_sensitivity(model, lambda k: build_quantized(model, spec, k, calib),
                                    layers, keep, batches, metric="sqnr", method=method)
        assert ranking[0].layer == victim, (method, ranking[:3])
        assert len(ranking) == len(layers)


def test_keep_float_patterns_and_clear_errors():
    model = _model("resnet20")
    fl = find_first_last(model, SHAPE)
    assert resolve_keep_float(model, ["first", "last", "layer3.*"], fl)[:2] == list(fl)
    assert "layer3.2.conv2" in resolve_keep_float(model, ["layer3.*"], fl)
    with pytest.raises(ModelError, match="layer9"):
        check(model, QuantizeSpec(keep_float=["first", "layer9.*"]), fl)
    with pytest.raises(ModelError, match="max_float_layers"):
        check(model, QuantizeSpec(max_accuracy_drop=1.0, max_float_layers=0), fl)


def test_untraceable_model_is_a_clear_error():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.conv(x)
            return self.conv(-x)

    with pytest.raises(ModelError, match=r"torch\.fx cannot trace"):
        prepare(Dynamic(), SCHEMES["onnxruntime-cpu"], [])


def test_max_accuracy_drop_falls_back_to_float_for_the_damaged_layer(tmp_path, monkeypatch):
    from deploykit.data import Loaders
    from deploykit.stages.quantize import run
    from deploykit.state import PipelineState

    # 8-bit weights on every machine: this random model predicts one class for every input,
    # and with 8-bit weights the damaged layer flips one prediction in 128 (a 0.78-point
    # drop, over the 0.5 bound); with the 7-bit weights of an x86 CPU without VNNI it flips
    # none, and there is nothing to fall back from
    monkeypatch.setattr("deploykit.quant.scheme.u8s8_saturates", lambda features=None: False)
    model = _model("resnet20")
    victim = _damage(model, "layer2.1")
    xs = _calib(16, seed=11)
    with torch.no_grad():  # labels = the float model's own predictions: float top-1 is 100%
        val = [(x, model(x).argmax(1)) for x in xs]
    calib = [(x, torch.zeros(len(x), dtype=torch.long)) for x in _calib(3)]
    loaders = Loaders(train=val, val=val, calib=calib, num_classes=10, input_shape=SHAPE,
                      class_names=[str(i) for i in range(10)], mean=(0.0,) * 3, std=(1.0,) * 3)
    fl = find_first_last(model, SHAPE)
    spec = QuantizeSpec(calibration={"method": "minmax"}, max_accuracy_drop=0.5,
                        sensitivity={"metric": "sqnr", "samples": 32})
    state = run(PipelineState.start(model, fl, SHAPE, tmp_path), loaders, spec)
    metrics = state.history[-1].metrics
    assert metrics["sensitivity"][0]["layer"] == victim
    assert metrics["fallback_float_layers"][0] == victim
    cand = state.candidates[-1]
    assert cand.name == "ptq-int8" and victim in cand.keep_float
    assert 100.0 - cand.torch_top1_pct <= 0.5
    assert cand.arch["layer_precision"][victim] == "fp32"


def _ort_optimized(path: str, tmp_path) -> onnx.GraphProto:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return onnx.load(opts.optimized_model_filepath).graph


def test_maxpool_in_int8_for_tensorrt(tmp_path):
    """tensorrt: the max-pool after resnet18's float stem shares the quantizer that follows it,
    so it pools INT8 values."""
    qm = _quantize(_model("torchvision:resnet18"), target="tensorrt")
    g, _ = _graph(qm, tmp_path)
    prod = _producers(g)
    pool = next(n for n in g.node if n.op_type == "MaxPool")
    dq = prod[pool.input[0]]
    assert dq.op_type == "DequantizeLinear"
    q_after = next(n for n in g.node
                   if n.op_type == "QuantizeLinear" and n.input[0] == pool.output[0])
    inits = _inits(g)
    assert inits[dq.input[1]] == inits[q_after.input[1]]   # the same scale on both sides


def test_maxpool_stays_float_for_onnxruntime(tmp_path):
    """onnxruntime-cpu: ONNX Runtime's uint8 max-pool is slow, so the pool gets float input,
    and a ReLU guard keeps ONNX Runtime's QDQ propagation from moving the quantizer above it;
    ONNX Runtime then folds the guard, and ONNX and PyTorch still agree."""
    model = _model("torchvision:resnet18")
    qm = _quantize(model)
    g, path = _graph(qm, tmp_path)
    prod = _producers(g)
    pool = next(n for n in g.node if n.op_type == "MaxPool")
    assert prod[pool.input[0]].op_type != "DequantizeLinear"
    guard = next(n for n in g.node if n.input and n.input[0] == pool.output[0])
    assert guard.op_type == "Relu"
    opt = _ort_optimized(path, tmp_path)
    oprod = _producers(opt)
    pools = [n for n in opt.node if "MaxPool" in n.op_type]
    assert len(pools) == 1
    assert oprod[pools[0].input[0]].op_type != "QuantizeLinear"   # pools float values
    after = next(n for n in opt.node if n.input and n.input[0] == pools[0].output[0])
    if after.op_type == "ReorderOutput":   # the pool ran in ONNX Runtime's NCHWc layout
        after = next(n for n in opt.node if n.input and n.input[0] == after.output[0])
    assert after.op_type == "QuantizeLinear"   # the guard is gone, the quantizer follows
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = qm(x).numpy()
    out = OrtRunner(path)(x.numpy())
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()


def test_every_int8_conv_runs_as_an_integer_kernel_in_onnxruntime(tmp_path):
    """mobilenet_v2's last 1x1 conv feeds the float classifier through a pool; its output still
    ends in a quantizer, so ONNX Runtime runs it (and every other INT8 conv) as QLinearConv."""
    model = _model("torchvision:mobilenet_v2")
    qm = _quantize(model)
    int8 = [n for n, p in qm.layer_precision.items() if p == "int8"]
    _, path = _graph(qm, tmp_path)
    opt = _ort_optimized(path, tmp_path)
    ops = [n.op_type for n in opt.node]
    assert ops.count("QLinearConv") == len(int8)
    assert sum(op in ("Conv", "FusedConv") for op in ops) == 1   # only the float stem


def test_non_finite_activations_in_calibration_are_a_clear_error():
    from deploykit.errors import ModelError

    model = _model("resnet20")
    with torch.no_grad():
        model.layer2[0].conv1.weight.fill_(float("nan"))
    with pytest.raises(ModelError, match=r"saw non-finite values .* during calibration"):
        build_quantized(model, QuantizeSpec(calibration={"method": "minmax"}), ["conv1", "fc"],
                        _calib(2))


def test_one_quantizer_per_tensor_through_stochastic_depth_and_dropout(tmp_path):
    """A quantizer before an eval-time identity (stochastic depth, dropout) and another after
    it export as Q -> DQ -> Q -> DQ, which ONNX Runtime merges into one pair with other
    parameters than the simulation: EfficientNet's INT8 ONNX disagreed with it by half the
    logit range."""
    from torchvision.ops import StochasticDepth

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.sd = StochasticDepth(0.2, "row")
            self.drop = nn.Dropout(0.1)
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            x = self.stem(x)
            x = self.sd(self.conv(x)) + x
            return self.head(self.drop(x)).mean((2, 3))

    g, _ = _graph(_quantize(Block().eval(), keep=[]), tmp_path)
    prod = _producers(g)
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in prod:
            src = prod[n.input[0]]
            assert src.op_type != "DequantizeLinear", f"{n.name} requantizes {src.name}"
    adds = [n for n in g.node if n.op_type == "Add" and all(i in prod for i in n.input)]
    assert [prod[i].op_type for i in adds[0].input] == ["DequantizeLinear"] * 2


def _tiny_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                          mlp_dim=64, num_classes=10).eval()
    nn.init.normal_(m.heads.head.weight, std=0.5)   # torchvision zero-initialises the head
    return m


@pytest.mark.parametrize("batch_first", [True, False])
def test_quant_attention_computes_multihead_attention(batch_first):
    """Before calibration (activation quantizers pass through; weights are INT8 already) the
    split projections + SDPA give nn.MultiheadAttention's output to weight rounding, for
    self-attention and for distinct key/value; a head split or projection mixed up is off by
    far more."""
    from deploykit.quant import QuantAttention
    from deploykit.quant.calib import make_calibrator

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    scheme = SCHEMES["onnxruntime-cpu"]
    qa = QuantAttention(mha, lambda: ActQuant(scheme, lambda: make_calibrator("minmax", scheme)))
    x, kv = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    if not batch_first:
        x, kv = x.transpose(0, 1), kv.transpose(0, 1)
    with torch.no_grad():
        for q, k in ((x, x), (x, kv)):
            ref, _ = mha(q, k, k, need_weights=False)
            out, weights = qa(q, k, k, need_weights=False)
            assert weights is None and out.shape == ref.shape
            assert (out - ref).abs().max() < 0.02 * ref.abs().max()
    with pytest.raises(ModelError, match="attention masks"):
        qa(x, x, x, attn_mask=torch.zeros(5, 5, dtype=torch.bool))


def test_transformer_projections_are_int8_and_run_as_integer_matmuls(tmp_path):
    """ViT: q/k/v/out projections and the MLP in INT8 (LayerNorm, softmax, GELU float); MACs
    and parameters count as the float model's; ONNX Runtime runs every INT8 projection as an
    integer MatMul and matches the simulation."""
    import collections

    import onnxruntime as ort

    from deploykit.models import count_macs_params

    model = _tiny_vit()
    qm = _quantize(model, keep=["conv_proj", "heads.head"])
    int8 = [n for n, p in qm.layer_precision.items() if p == "int8"]
    assert {n.rsplit(".", 1)[1] for n in int8} == {"q", "k", "v", "out_proj", "0", "3"}
    assert len(int8) == 2 * 6
    assert count_macs_params(qm, SHAPE) == count_macs_params(model, SHAPE)
    _, path = _graph(qm, tmp_path)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    assert ops["MatMulIntegerToFloat"] + ops["QLinearMatMul"] == len(int8)
    x = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = qm(x).numpy()
    assert np.abs(OrtRunner(path)(x.numpy()) - ref).max() < 0.05 * np.abs(ref).max()
    # keeping one projection float keeps its attention block float
    kept = _quantize(model, keep=["conv_proj", "heads.head",
                                  "encoder.layers.encoder_layer_0.self_attention.q"])
    prec = kept.layer_precision
    assert prec["encoder.layers.encoder_layer_0.self_attention.v"] == "fp32"
    assert prec["encoder.layers.encoder_layer_1.self_attention.v"] == "int8"


def test_onnxruntime_cpu_weights_are_7_bit_where_its_u8s8_kernels_saturate(tmp_path):
    """x86 without VNNI adds pairs of uint8 x int8 products in 16 bits (vpmaddubsw): 7-bit
    weights can never overflow there; VNNI, AMX and ARM dot products need no such cut."""
    import dataclasses

    from deploykit.host.cpu import u8s8_saturates
    from deploykit.quant.scheme import scheme_for

    assert u8s8_saturates(["avx2"]) and u8s8_saturates(["avx2", "avx512f"])
    assert not any(u8s8_saturates(f) for f in (["avx2", "avx512f", "avx512_vnni"],
                                               ["avx2", "avx_vnni"], ["asimddp", "i8mm"], []))
    assert scheme_for("onnxruntime-cpu", ["avx2"]).weight_bits == 7
    assert scheme_for("onnxruntime-cpu", ["avx2", "avx512_vnni"]).weight_bits == 8
    assert scheme_for("tensorrt", ["avx2"]).weight_bits == 8
    assert SCHEMES["onnxruntime-cpu"] == scheme_for("onnxruntime-cpu")   # this machine's
    model = _model("resnet20")
    reduced = dataclasses.replace(SCHEMES["onnxruntime-cpu"], weight_qmax=63)
    spec = QuantizeSpec(calibration={"method": "minmax"})
    qm = build_quantized(model, spec, [], _calib(), reduced)
    g, path = _graph(qm, tmp_path)
    prod, inits = _producers(g), _inits(g)
    weights = [inits[prod[n.input[1]].input[0]] for n in g.node
               if n.op_type == "Conv" and n.input[1] in prod]
    assert weights and all(np.abs(w).max() == 63 for w in weights)   # the full 7-bit range
    x = _calib(1, seed=5)[0]
    with torch.no_grad():
        ref = qm(x).numpy()
    got = OrtRunner(path)(x.numpy())
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()   # computes what it simulates


def test_keep_float_depthwise_names_every_depthwise_conv():
    from torch import nn

    from deploykit.models import build_model
    from deploykit.quant.prepare import resolve_keep_float
    from deploykit.recipe import ModelSpec

    model = build_model(ModelSpec(name="mobilenet_v2_cifar", num_classes=10))
    names = resolve_keep_float(model, ["depthwise"], ("", ""))
    expected = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)
                and m.groups == m.in_channels > 1]
    assert names == expected and len(names) == 17


def test_hard_activations_become_relu6_based():
    import torch
    import torchvision
    from torch import nn

    from deploykit.models.activations import HardSigmoidRelu6, replace_hard_activations

    model = torchvision.models.mobilenet_v3_small(num_classes=4).eval()
    replaced = replace_hard_activations(model)
    assert len(replaced) == 28    # 19 HardSwish + 9 squeeze-excitation HardSigmoids
    assert not any(isinstance(m, (nn.Hardswish, nn.Hardsigmoid)) for m in model.modules())
    x = torch.linspace(-5, 5, 101)
    assert torch.allclose(HardSigmoidRelu6()(x), nn.functional.hardsigmoid(x))
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
