"""D-SSD: SSDlite (MobileNetV3, width 0.5, 160 px) on the generated shapes set, from scratch.

Phases (each cached, so a rerun continues where it stopped):

1. teacher: the float detector trained from scratch (``--teacher-epochs`` over the train set);
2. prune: its network (backbone + head, the 12 prediction convs kept whole) pruned to about
   0.5x MACs with torch-pruning;
3. recover: the pruned student trained for the same budget (``--recover-epochs``) with plain
   fine-tuning, each Chen term alone, and all three (``--seeds`` repeats each with another
   data order and augmentation).

mAP@[.5:.95] and mAP@.5 through torchmetrics (faster-coco-eval) on the validation scenes.
Results: results/dssd.json (rows appended per variant and seed).

    python benchmarks/detect/run_dssd.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from common import save_results, stamp  # noqa: E402

from deploykit.host.progress import log  # noqa: E402
from deploykit.models import count_macs_params  # noqa: E402
from deploykit.prune import prune_to_macs  # noqa: E402
from deploykit.recipe import DataSpec, PruneSpec, TrainSpec  # noqa: E402
from deploykit.runfiles.atomic import save_torch  # noqa: E402
from deploykit.tasks import get_task  # noqa: E402
from deploykit.tasks.detect.data import build_detection_loaders  # noqa: E402
from deploykit.tasks.detect.loss import (  # noqa: E402
    ChenTerms,
    chen_loss,
    detector_loss,
    hint_adapter,
)
from deploykit.tasks.detect.metric import evaluate_detector  # noqa: E402
from deploykit.tasks.detect.models import (  # noqa: E402
    DetectorNetwork,
    build_detector,
    prediction_layers,
    with_network,
)
from deploykit.train import fit, seed_everything  # noqa: E402

CACHE = ROOT / "results" / "cache"
OUT = ROOT / "results" / "dssd.json"
MODEL, WIDTH, SIZE, CLASSES = "ssdlite320_mobilenet_v3_large", 0.5, 160, 5
VARIANTS = {
    "plain": ChenTerms(),
    "soft_ce": ChenTerms(mu=0.5),
    "bounded_reg": ChenTerms(bounded_weight=0.5),
    "hint": ChenTerms(hint_weight=1.0),
    "all_three": ChenTerms(mu=0.5, bounded_weight=0.5, hint_weight=1.0),
}


def data(args, seed: int):
    spec = DataSpec(kind="shapes", image_size=SIZE, batch_size=args.batch, eval_batch_size=50,
                    limit_train=args.train_images, limit_val=args.val_images, calib_samples=64)
    return build_detection_loaders(spec, seed, CLASSES)


def evaluate(model, loaders) -> dict:
    return evaluate_detector(model, loaders.val)


def teacher(args, loaders, results):
    path = CACHE / "dssd_teacher.pt"
    model = build_detector(MODEL, CLASSES, SIZE, WIDTH)
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    seed_everything(0)
    spec = TrainSpec(epochs=args.teacher_epochs, optimizer="adamw", lr=args.lr,
                     weight_decay=5e-4, schedule="cosine", device="cpu")
    res = fit(model, loaders.train, loaders.val, spec, CACHE / "dssd_teacher_ck", resume=True,
              objective=get_task("detection").objective, desc="D-SSD teacher")
    save_torch(model.state_dict(), path)
    results["teacher"] = {**evaluate(model, loaders), "epochs": args.teacher_epochs,
                          "train_images": args.train_images, "seconds": res.seconds,
                          "history": res.history}
    save_results(OUT, results)
    return model


def pruned(teacher_model, results):
    path = CACHE / "dssd_pruned.pt"
    shape = (3, SIZE, SIZE)
    net = DetectorNetwork(teacher_model).eval()
    base = count_macs_params(net, shape)[0]
    if path.is_file():
        student = torch.load(path, weights_only=False)   # our own cache: a whole module
        return student, base
    small, _, probes = prune_to_macs(net, shape, PruneSpec(target={"macs_ratio": 0.5},
                                                           round_to=8),
                                     prediction_layers(net), int(0.5 * base), 0.02 * base)
    student = with_network(teacher_model, small)
    torch.save(student, path)
    results["pruned"] = {"network_macs": count_macs_params(small, shape)[0],
                         "teacher_network_macs": base, "probes": probes}
    save_results(OUT, results)
    return student, base


def recover(args, name, terms, student0, teacher_model, seed, results):
    import copy

    key = f"{name}/seed{seed}"
    path = CACHE / f"dssd_{name}_s{seed}.pt"
    if any(r["key"] == key for r in results["rows"]) and path.is_file():
        return torch.load(path, weights_only=False)   # our own cache: a whole module
    loaders = data(args, seed)
    student = copy.deepcopy(student0)
    seed_everything(seed)
    adapter = hint_adapter(student, teacher_model, SIZE, terms.hint_level) \
        if terms.hint_weight > 0 else None
    loss = detector_loss if terms == ChenTerms() else chen_loss(teacher_model, terms, adapter)
    spec = TrainSpec(epochs=args.recover_epochs, optimizer="adamw", lr=args.recover_lr,
                     weight_decay=5e-4, schedule="cosine", device="cpu")
    res = fit(student, loaders.train, loaders.val, spec, CACHE / f"dssd_{name}_s{seed}",
              resume=True, loss_fn=loss, objective=get_task("detection").objective,
              desc=f"recover {key}", extra_modules=adapter)
    torch.save(student, path)
    results["rows"] = [r for r in results["rows"] if r["key"] != key]
    results["rows"].append({"key": key, "variant": name, "seed": seed, "terms": vars(terms),
                            **evaluate(student, loaders), "seconds": res.seconds,
                            "history": res.history})
    save_results(OUT, results)
    return student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--train-images", type=int, default=3000)
    ap.add_argument("--val-images", type=int, default=500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--recover-epochs", type=int, default=3)
    ap.add_argument("--recover-lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    CACHE.mkdir(parents=True, exist_ok=True)
    results = json.loads(OUT.read_text()) if OUT.is_file() else {"rows": []}
    results.update(date=stamp(), cpu=platform.processor() or platform.machine(),
                   setup={k: v for k, v in vars(args).items() if k != "variants"},
                   model=f"{MODEL} width_mult {WIDTH} at {SIZE} px, {CLASSES} classes")
    loaders = data(args, 0)
    t = teacher(args, loaders, results)
    results.setdefault("teacher", {}).update(evaluate(t, loaders))
    student, _ = pruned(t, results)
    results.setdefault("pruned", {}).update(evaluate(student, loaders))
    save_results(OUT, results)
    log(f"teacher {results['teacher']['map50_pct']:.1f} mAP@.5, pruned "
        f"{results['pruned']['map50_pct']:.1f}")
    for seed in args.seeds:
        for name in args.variants:
            t0 = time.time()
            recover(args, name, VARIANTS[name], student, t, seed, results)
            log(f"{name} seed {seed}: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
