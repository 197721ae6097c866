"""The distillation objective: the recipe's weighted loss terms plus their trainable adapters.

:class:`DistillObjective` is an ``nn.Module`` holding the adapters (FitNets regressor, overhaul
connectors, FSP channel maps) so the training loop optimises and checkpoints them with the
student; calling it as ``objective.loss(student, x, y)`` gives the named terms the loop logs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.distill import losses as L
from deploykit.distill.taps import FeatureTaps, last_bn, resolve_taps
from deploykit.distill.teacher import Teacher
from deploykit.errors import RecipeError
from deploykit.models import split_outputs
from deploykit.recipe import DistillSpec

__all__ = ["DistillObjective", "mixup"]


def mixup(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mix each image with another of the batch, ``lambda ~ U[0, 1]`` (one per batch); labels
    are not needed because function matching has no label term."""
    lam = float(torch.rand((), generator=generator))
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm]


def _conv1x1(c_in: int, c_out: int, bn: bool) -> nn.Module:
    conv = nn.Conv2d(c_in, c_out, 1, bias=not bn)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(c_out)) if bn else conv


def _probe(model: nn.Module, names: list[str], x: torch.Tensor, pre_relu: bool
           ) -> list[torch.Size]:
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), FeatureTaps(model, names, pre_relu) as taps:
            model(x)
            return [f.shape for f in taps.features()]
    finally:
        model.train(was)


class DistillObjective(nn.Module):
    """Loss terms of a distill stage for one student/teacher pair.

    Args:
        student: the model being trained (its module names must contain the taps).
        teacher: the frozen teacher.
        spec: the stage settings (weights, temperature, taps, mode).
        example: one input batch at the student's resolution, to size the adapters.

    Raises:
        RecipeError: a tap is missing, or not a 4-D feature map.
    """

    def __init__(self, student: nn.Module, teacher: Teacher, spec: DistillSpec,
                 example: torch.Tensor, seed: int = 0):
        super().__init__()
        self.spec, self.teacher = spec, teacher
        self.w = spec.losses
        self.mix_gen = torch.Generator().manual_seed(seed)
        feature_terms = self.w.feature_terms()
        self.taps = resolve_taps(teacher.main, spec.taps) if feature_terms else []
        self.hint_tap = spec.hint_tap or (self.taps[len(self.taps) // 2] if self.taps else None)
        if self.w.hint and spec.hint_tap:
            resolve_taps(teacher.main, [spec.hint_tap])
        post = list(self.taps) if (self.w.attention or self.w.fsp) else []
        if self.w.hint and self.hint_tap not in post:
            post.append(self.hint_tap)
        self.post_names: list[str] = post
        self.pre_names = self.taps if self.w.overhaul else []
        self.adapters = nn.ModuleDict()
        self._margin_names: list[str] = []
        self.notes: list[str] = []
        if not feature_terms:
            if self.w.kd:
                self.notes = teacher.optimize_for_logits()
            return
        student_names = {n for n, _ in student.named_modules()}
        missing = [n for n in {*self.post_names, *self.pre_names} if n not in student_names]
        if missing:
            raise RecipeError(f"distill taps: the student has no module {', '.join(missing)} "
                              "(the teacher has); name taps present in both")
        xt = teacher.view(example)
        shapes: dict[tuple[str, bool], tuple[torch.Size, torch.Size]] = {}
        for names, pre in ((self.post_names, False), (self.pre_names, True)):
            if not names:
                continue
            s_shapes = _probe(student, names, example, pre)
            t_shapes = _probe(teacher.main, names, xt, pre)
            for n, s, t in zip(names, s_shapes, t_shapes, strict=True):
                if len(s) != 4 or len(t) != 4:
                    raise RecipeError(f"distill taps: {n!r} gives a {len(s)}-D output; feature "
                                      "losses need 4-D feature maps (N, C, H, W)")
                shapes[n, pre] = (s, t)
        key = _adapter_key
        if self.w.hint:
            s, t = shapes[self.hint_tap, False]
            self.adapters[key("hint", self.hint_tap)] = _conv1x1(s[1], t[1], bn=False)
        if self.w.overhaul:
            modules = dict(teacher.main.named_modules())
            for n in self.pre_names:
                s, t = shapes[n, True]
                self.adapters[key("overhaul", n)] = _conv1x1(s[1], t[1], bn=True)
                bn = last_bn(modules[n])
                if bn is None or bn.num_features != t[1]:
                    raise RecipeError(f"distill overhaul: no BatchNorm with {t[1]} channels "
                                      f"before the ReLU of {n!r} to take the margins from")
                self.register_buffer(f"margin_{len(self._margin_names)}", L.margin_from_bn(bn))
                self._margin_names.append(f"margin_{len(self._margin_names)}")
        if self.w.fsp:
            for n in self.taps:
                s, t = shapes[n, False]
                if s[1] != t[1]:
                    self.adapters[key("fsp", n)] = _conv1x1(s[1], t[1], bn=False)

    def _adapt(self, kind: str, name: str, feat: torch.Tensor) -> torch.Tensor:
        k = _adapter_key(kind, name)
        return self.adapters[k](feat) if k in self.adapters else feat

    def loss(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor
             ) -> dict[str, torch.Tensor]:
        """The named terms for one batch; ``loss`` is their weighted sum."""
        w, spec = self.w, self.spec
        if spec.mode == "function_matching" and spec.mixup:
            x = mixup(x, self.mix_gen)
        with FeatureTaps(student, self.post_names) as s_post, \
                FeatureTaps(student, self.pre_names, pre_relu=True) as s_pre:
            logits = split_outputs(student(x))[0]   # auxiliary heads do not distil
            sp = dict(zip(self.post_names, s_post.features(), strict=True)) \
                if self.post_names else {}
            sr = dict(zip(self.pre_names, s_pre.features(), strict=True)) \
                if self.pre_names else {}
        if not (w.kd or w.feature_terms()):   # plain fine-tuning: no teacher pass at all
            ce = F.cross_entropy(logits, y)
            return {"loss": w.ce * ce, "ce": ce.detach()}
        with FeatureTaps(self.teacher.main, self.post_names) as t_post, \
                FeatureTaps(self.teacher.main, self.pre_names, pre_relu=True) as t_pre:
            t_logits = self.teacher(x)
            tp = dict(zip(self.post_names, t_post.features(), strict=True)) \
                if self.post_names else {}
            tr = dict(zip(self.pre_names, t_pre.features(), strict=True)) \
                if self.pre_names else {}
        terms: dict[str, torch.Tensor] = {}
        if w.ce:
            terms["ce"] = F.cross_entropy(logits, y)
        if w.kd:
            terms["kd"] = L.ensemble_kd(logits, t_logits, spec.temperature)
        if w.hint:
            n = self.hint_tap
            s = L.match_spatial(self._adapt("hint", n, sp[n]), tp[n])
            terms["hint"] = L.hint_loss(s, tp[n])
        if w.attention:
            terms["attention"] = sum(L.attention_loss(sp[n], tp[n]) for n in self.taps)
        if w.overhaul:
            k = len(self.pre_names)
            margins = [getattr(self, m) for m in self._margin_names]
            terms["overhaul"] = sum(
                L.partial_l2(L.match_spatial(self._adapt("overhaul", n, sr[n]), tr[n]), tr[n],
                             m) / 2 ** (k - i - 1)
                for i, (n, m) in enumerate(zip(self.pre_names, margins, strict=True)))
        if w.fsp:
            fs = [self._adapt("fsp", n, sp[n]) for n in self.taps]
            ft = [tp[n] for n in self.taps]
            terms["fsp"] = sum(L.fsp_loss((fs[i], fs[i + 1]), (ft[i], ft[i + 1]))
                               for i in range(len(fs) - 1))
        total = sum(getattr(w, k) * v for k, v in terms.items())
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}


def _adapter_key(kind: str, name: str) -> str:
    return f"{kind}__{name}".replace(".", "_")
