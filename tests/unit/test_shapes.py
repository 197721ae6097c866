"""The generated detection set: deterministic, and its boxes are where the shapes are drawn."""

from __future__ import annotations

import torch

from deploykit.tasks.detect.shapes import CLASSES, ShapesDetection, render_scene


def test_the_same_seed_draws_the_same_scene_and_another_seed_another():
    a, b = render_scene((0, 7)), render_scene((0, 7))
    assert torch.equal(a.image, b.image) and torch.equal(a.boxes, b.boxes)
    assert torch.equal(a.labels, b.labels)
    c = render_scene((0, 8))
    assert not torch.equal(a.image, c.image)
    ds = ShapesDetection(4, size=96, seed=3)
    img, target = ds[2]
    again = render_scene((3, 2), 96)
    assert img.shape == (3, 96, 96) and img.dtype == torch.uint8
    assert torch.equal(img, again.image) and torch.equal(target["boxes"], again.boxes)


def test_each_box_is_the_tight_box_of_its_shapes_pixels():
    # shapes are filled with one colour each, distinct in the scene: the pixels of that colour
    # lie in the shape's box, touch all four of its sides unless hidden, and cover at least
    # half of the box's shape (no shape hidden more than half)
    for i in range(40):
        s = render_scene((1, i), 128)
        assert len(s.boxes) == len(s.labels) == len(s.colors) >= 1
        for box, color in zip(s.boxes.int().tolist(), s.colors, strict=True):
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
            hit = (s.image == color.view(3, 1, 1)).all(0)
            inside = hit[y0:y1, x0:x1]
            assert hit.sum() - inside.sum() <= 2          # background noise may match a pixel
            ys, xs = torch.nonzero(inside, as_tuple=True)
            assert len(ys) >= 2
            edges = [xs.min() == 0, ys.min() == 0, xs.max() == x1 - x0 - 1, ys.max() == y1 - y0 - 1]
            assert sum(bool(e) for e in edges) >= 2       # later shapes hide at most half


def test_the_set_has_every_class_sizes_small_to_large_crowds_and_overlaps():
    scenes = [render_scene((2, i), 160) for i in range(150)]
    labels = torch.cat([s.labels for s in scenes])
    assert set(labels.tolist()) == set(range(1, len(CLASSES) + 1))
    sides = torch.cat([(s.boxes[:, 2:] - s.boxes[:, :2]).amax(1) for s in scenes]) / 160
    assert sides.min() < 0.1 and sides.max() > 0.4
    counts = torch.tensor([len(s.labels) for s in scenes], dtype=torch.float)
    assert counts.mean() > 2.5 and counts.max() >= 5
    overlapping = 0
    for s in scenes:
        b = s.boxes
        lt = torch.max(b[:, None, :2], b[None, :, :2])
        rb = torch.min(b[:, None, 2:], b[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        overlapping += int((inter.triu(1) > 0).any())
    assert overlapping >= 20
