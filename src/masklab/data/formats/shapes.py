"""The synthetic shapes as a source, so ``prepare.py data=shapes`` exports them to the canonical form.

Training on shapes needs no files (they are generated on the fly); exporting them gives the same
validation report as any other dataset and the on-disk form the DVC pipeline tracks. Each split's
images are written as PNG to a temporary folder first (the canonical writer copies files).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from masklab.data.formats import Source, SourceImage, SourceInstance
from masklab.data.shapes import CLASS_NAMES, ShapesDataset


def _mask(height: int, width: int, *, mask: np.ndarray) -> np.ndarray:
    return mask


def read(splits: dict[str, dict]) -> Source:
    """``splits``: {split: ShapesDataset keyword arguments} (what conf/data/shapes.yaml gives train/val)."""
    tmp = Path(tempfile.mkdtemp(prefix="masklab-shapes-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    source = Source([], categories=list(CLASS_NAMES))
    for split, kwargs in splits.items():
        kwargs = {k: v for k, v in dict(kwargs).items() if k != "_target_"}
        data = ShapesDataset(**kwargs)
        for i in range(len(data)):
            image, target = data[i]
            path = tmp / f"{split}_{data.start + i:06d}.png"
            Image.fromarray(image).save(path)
            record = f"shapes {split} image {data.start + i}"
            instances = [
                SourceInstance(CLASS_NAMES[label - 1], partial(_mask, mask=m), f"{record} instance {k}")
                for k, (m, label) in enumerate(zip(target["masks"].numpy(), target["labels"].tolist()))
            ]
            source.images.append(SourceImage(path, record, instances, split=split))
    return source
