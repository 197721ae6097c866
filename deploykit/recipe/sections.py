"""The recipe's sections other than the stages and gates: model, data, export, bench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from deploykit.recipe.base import MAX_BATCH, MAX_IMAGE_SIZE, MAX_THREADS, Strict
from deploykit.recipe.runtimes import Runtime

__all__ = [
    "BenchSpec",
    "DataSpec",
    "ExportSpec",
    "GpuBenchSpec",
    "ModelSpec",
    "OnnxExportSpec",
    "ParitySpec",
    "ResourcesSpec",
]


class DetectionsSpec(Strict):
    """What a detector keeps after decoding, for every candidate alike (the baseline too):
    boxes scoring below ``score_thresh``, beyond the ``topk_candidates`` best per class
    before NMS, and beyond ``detections_per_img`` after it are dropped. Unset: the detector's
    own defaults (SSDlite: 0.001, 300 and 300, settings for measuring mAP; a deployment keeps
    fewer boxes, and NMS, often as slow as the network, gets cheaper with them)."""

    score_thresh: float | None = Field(None, ge=0, lt=1)
    topk_candidates: int | None = Field(None, ge=1, le=100_000)
    detections_per_img: int | None = Field(None, ge=1, le=100_000)


class ModelSpec(Strict):
    """Which network to build.

    ``source``: ``builtin`` (CIFAR ResNets resnet20/32/56), ``torchvision`` (any classification
    model by name; with ``task: detection`` a torchvision detector, ``num_classes`` counting the
    object classes without the background), ``timm`` (needs ``pip install "deploykit[timm]"``)
    or ``factory`` (``name: "package.module:function"``, called as ``function(num_classes=N)``;
    this runs your code). ``checkpoint``: the finished model to compress (a state dict or a
    deploykit checkpoint, ``weights_only=True``; no baseline training); ``null`` trains a
    baseline with the ``train`` section. ``weights``: a state dict to start that training
    from (torchvision's, timm's or your own file): with another class count its classifier
    starts fresh, and the ``train`` section fine-tunes it on your data. ``num_classes``:
    default 10; with ``data.kind: imagefolder`` and no value given, the number of class
    folders under ``data.root/train`` (filled in when the recipe loads).
    """

    source: Literal["builtin", "torchvision", "timm", "factory"] = "builtin"
    name: str = "resnet20"
    num_classes: int = Field(10, ge=1, le=1_000_000)
    checkpoint: Path | None = None
    weights: Path | None = Field(None, description="a state dict to start the baseline "
                                 "training from (pretrained weights)")
    width_mult: float | None = Field(None, gt=0, le=4, description="detectors: SSDlite's "
                                     "backbone width multiplier (default 1.0)")
    detections: DetectionsSpec | None = None

    @model_validator(mode="after")
    def _one_source_of_weights(self) -> ModelSpec:
        if self.weights is not None and self.checkpoint is not None:
            raise ValueError("model.weights and model.checkpoint: give one. checkpoint is the "
                             "finished model to compress (no training); weights are where the "
                             "baseline training starts")
        return self


class CocoSplit(Strict):
    """One split of a COCO-format set: its images folder (``file_name`` entries are relative
    to it) and its annotation file. Relative paths are taken from ``data.root``."""

    images: Path
    annotations: Path


class CocoSplits(Strict):
    """Where each split's images and annotations are, for the layouts sets come in:
    COCO's own (``annotations/instances_train2017.json`` + ``train2017/``), Roboflow's COCO
    export (``train/_annotations.coco.json`` beside the images), CVAT's
    (``annotations/instances_default.json`` + ``images/``)."""

    train: CocoSplit
    val: CocoSplit


class DataSpec(Strict):
    """Where images come from.

    ``digits`` is scikit-learn's bundled 8x8 digits (no files needed), ``imagefolder`` reads
    ``root/train/<class>/*`` and ``root/val`` (or ``root/test``), ``synthetic`` makes random
    tensors for tests. For detectors: ``shapes`` generates coloured shapes with boxes
    (``limit_train``/``limit_val`` images, default 2000/300), ``coco`` reads ``root/train`` and
    ``root/val``, each an ``instances.json`` beside the images it names. ``cache`` decodes an
    image folder once into memory (fast epochs for
    small images such as CIFAR-10). ``limit_train``/``limit_val`` take a seeded subset. Every
    image of a folder is decoded (or checked) before training; ``skip_corrupt`` skips the files
    that fail instead of stopping. ``splits`` (``kind: coco``): each split's images folder and
    annotation file, for a set laid out otherwise (see :class:`CocoSplits`).
    """

    kind: Literal["digits", "imagefolder", "synthetic", "shapes", "coco"] = "digits"
    root: Path | None = None
    image_size: int = Field(32, ge=8, le=MAX_IMAGE_SIZE)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    eval_batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    augment: bool = True
    cache: bool = True
    num_workers: int = Field(2, ge=0, le=MAX_THREADS)
    limit_train: int | None = Field(None, ge=1)
    limit_val: int | None = Field(None, ge=1)
    skip_corrupt: bool = Field(False, description="skip (and count) image files that cannot "
                               "be decoded instead of stopping")
    calib_samples: int = Field(512, ge=1, le=10_000_000)
    synthetic_samples: int = Field(512, ge=8, le=10_000_000)
    splits: CocoSplits | None = Field(None, description="kind coco: each split's images "
                                      "folder and annotation file, when the set is not "
                                      "root/{train,val}/instances.json")

    @model_validator(mode="after")
    def _root_rules(self) -> DataSpec:
        if (self.kind == "imagefolder" and self.root is None) or \
                (self.kind == "coco" and self.root is None and self.splits is None):
            raise ValueError(f"data.kind '{self.kind}' needs data.root: the folder holding "
                             "train/ (and val/)" + (", or data.splits naming each split's "
                                                    "images and annotations"
                                                    if self.kind == "coco" else ""))
        if self.splits is not None and self.kind != "coco":
            raise ValueError("data.splits names COCO-format files: it is for data.kind coco")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"data.std must be positive per channel (got {list(self.std)}): "
                             "inputs are divided by it")
        return self


class ParitySpec(Strict):
    """Thresholds for the exported-vs-PyTorch check that runs before any benchmark.

    A float artifact passes when its largest logit error is within ``max_abs_error`` *or*
    within ``max_error_vs_range`` of the largest reference logit (float32 rounding grows with
    the logits: a correct export of a model with logits in the hundreds differs by more than
    1e-3), and at least ``min_top1_agreement`` of the predictions agree.
    """

    max_abs_error: float = Field(1e-3, gt=0)
    max_error_vs_range: float = Field(1e-4, gt=0, description="error / max |reference logit|")
    min_top1_agreement: float = Field(0.99, gt=0, le=1)
    real_batches: int = Field(2, ge=0)
    # Quantized artifacts differ from their PyTorch simulation by rounding (integer kernels
    # requantize with their own rounding) and FP16 by half-precision accumulation.
    # INT8: error relative to the largest reference logit only, since it scales with the logits.
    fp16_max_abs_error: float = Field(5e-2, gt=0)
    int8_max_error_vs_range: float = Field(0.1, gt=0)
    int8_min_top1_agreement: float = Field(0.95, gt=0, le=1)
    # Detectors in INT8: the runtime's rounding moves scores by up to a few 1e-2, so among the
    # hundreds of near-zero boxes kept for measuring mAP, NMS and the top-k cut pick
    # differently; the matched detections are those scored above this, pooled over the images
    # (mAP is still measured on all).
    int8_min_detection_score: float = Field(0.05, ge=0, lt=1)
    # INT8 limits widen to this many times the simulation's own rounding noise (its output
    # when inputs move far below one quantization step): where rounding alone moves a model's
    # logits by more than the limits, a runtime that rounds differently does too.
    int8_noise_floor_factor: float | None = Field(2.0, gt=0)

    def thresholds(self, precision: str) -> dict[str, float | None]:
        """The keyword arguments of ``deploykit.bench.check_parity`` for ``precision``:
        ``max_abs_error``, ``max_error_vs_range`` (either may be None),
        ``min_top1_agreement`` and, for INT8, ``noise_floor_factor``."""
        if precision == "int8":
            return {"max_abs_error": None, "max_error_vs_range": self.int8_max_error_vs_range,
                    "min_top1_agreement": self.int8_min_top1_agreement,
                    "noise_floor_factor": self.int8_noise_floor_factor}
        if precision == "fp16":
            return {"max_abs_error": self.fp16_max_abs_error, "max_error_vs_range": None,
                    "min_top1_agreement": self.min_top1_agreement}
        if precision == "bf16":   # 3 fewer mantissa bits than fp16: 8x its rounding
            return {"max_abs_error": 8 * self.fp16_max_abs_error, "max_error_vs_range": None,
                    "min_top1_agreement": self.min_top1_agreement}
        return {"max_abs_error": self.max_abs_error, "max_error_vs_range": self.max_error_vs_range,
                "min_top1_agreement": self.min_top1_agreement}


class OnnxExportSpec(Strict):
    opset: int = Field(18, ge=17)

    @field_validator("opset")
    @classmethod
    def _known_opset(cls, v: int) -> int:
        import onnx  # a core dependency; imported only when an export section is validated

        newest = onnx.defs.onnx_opset_version()
        if v > newest:
            raise ValueError(f"opset {v} is newer than the installed onnx {onnx.__version__} "
                             f"knows (newest: {newest})")
        return v
    dynamic_batch: bool = True
    parity: ParitySpec = ParitySpec()


class ExportSpec(Strict):
    onnx: OnnxExportSpec = OnnxExportSpec()


class ResourcesSpec(Strict):
    """What a run may use. Before any training the run is refused when the model's training
    memory (weights, gradients, optimizer state, model copies, a batch's activations) cannot
    fit; while it runs, a watchdog stops it with an error once its resident memory passes the
    limit, instead of the system's out-of-memory killer."""

    max_memory_gb: float | None = Field(
        None, gt=0, description="resident memory limit, GiB (default: 90% of the memory "
        "available when the run starts)")


class GpuBenchSpec(Strict):
    """How the GPU runtimes run a candidate. ``precisions``: torch-cuda times a float candidate
    once per entry (fp32, fp16, bf16), one latency row each; ``channels_last``: NHWC memory
    format; ``cuda_graphs``: replay one captured graph per batch size (at batch 1 a big GPU is
    bound by kernel launches, which the graph removes); ``compile``: ``torch.compile`` first
    (it brings its own graphs, so it excludes ``cuda_graphs``); ``device``: the GPU index.
    The defaults are what GPU deployments use. ONNX Runtime's TensorRT EP may use FP16 when
    ``precisions`` holds fp16. INT8 candidates are timed only by INT8 engines (tensorrt,
    onnxruntime-tensorrt), never as their simulation on torch-cuda."""

    precisions: list[Literal["fp32", "fp16", "bf16"]] = Field(["fp16"], min_length=1)
    channels_last: bool = True
    cuda_graphs: bool = True
    compile: bool = False
    device: int = Field(0, ge=0, le=63)

    @model_validator(mode="after")
    def _consistent(self) -> GpuBenchSpec:
        if len(set(self.precisions)) != len(self.precisions):
            raise ValueError(f"bench.gpu.precisions lists a precision twice: {self.precisions}")
        if self.compile and self.cuda_graphs:
            raise ValueError("bench.gpu: compile and cuda_graphs both true; torch.compile "
                             "captures its own graphs: set cuda_graphs: false to compile, or "
                             "compile: false to replay CUDA graphs of the eager model")
        return self


class BenchSpec(Strict):
    """What to measure: runtimes, batch sizes, CPU threads, repetitions, accuracy.

    GPU runtimes (``torch-cuda``, ``onnxruntime-cuda``, ``onnxruntime-tensorrt``,
    ``tensorrt``) need a GPU and ``pip install "deploykit[gpu]"`` / ``"deploykit[tensorrt]"``;
    each is checked against PyTorch on the CPU (parity) before it is timed.

    Timing stops once the 95% interval of every candidate's median is within
    ``target_rel_ci`` of it, or at ``max_iterations`` runs, or after ``time_budget_s``.
    """

    runtimes: list[Runtime] = Field(["torch-cpu", "onnxruntime-cpu"], min_length=1)
    batch_sizes: list[Annotated[int, Field(le=MAX_BATCH)]] = [1, 64]
    threads: int = Field(2, ge=1, le=MAX_THREADS)
    warmup: int = Field(10, ge=0, le=100_000)
    iterations: int = Field(50, ge=5, le=1_000_000, description="timed runs at least")
    target_rel_ci: float | None = Field(
        0.02, gt=0, lt=1, description="then repeat until the median's 95% interval is within "
        "+- this fraction of it (null: exactly `iterations`)")
    max_iterations: int = Field(400, ge=5, le=1_000_000)
    time_budget_s: float = Field(20.0, gt=0, le=86_400, description="per runtime and batch size")
    accuracy: bool = True
    gpu: GpuBenchSpec = GpuBenchSpec()

    @model_validator(mode="after")
    def _batches_positive(self) -> BenchSpec:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError("bench.batch_sizes must be a non-empty list of positive integers")
        return self
