"""Decoding image files, and finding the ones that cannot be decoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["decode_images"]


def decode_images(paths: list[Path], size: int | None, desc: str
                  ) -> tuple[torch.Tensor | None, dict[Path, str]]:
    """Decode every image (to ``size`` x ``size``; ``size`` None: a fast reduced-size decode
    that only checks); return the images and the files that fail, with why."""
    from PIL import Image

    from deploykit.host.progress import progress_iter

    out = None if size is None else torch.zeros(len(paths), 3, size, size, dtype=torch.uint8)
    bad = {}
    for i, p in enumerate(progress_iter(paths, desc)):
        try:
            with Image.open(p) as im:
                if out is None:
                    im.draft("RGB", (32, 32))   # JPEG: decode at 1/8 scale, enough to check
                    im.load()
                    continue
                im = im.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                out[i] = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        except Exception as e:   # PIL raises OSError, SyntaxError, ValueError, bomb errors...
            bad[p] = f"{type(e).__name__}: {str(e)[:120]}"
    return out, bad
