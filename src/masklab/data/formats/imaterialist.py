"""Kaggle iMaterialist (Fashion) RLE CSV: ``ImageId, EncodedPixels, ClassId, Height, Width``.

``EncodedPixels`` is "start length start length ..." with 1-based starts over the column-major
(top-to-bottom, then left-to-right) pixel order, at the ``Height × Width`` the row declares.
``ClassId`` may carry attribute suffixes (``6_28_31`` -> class 6). Names come from the
competition's ``label_descriptions.json`` (``categories: [{id, name}]``) or a ``class_names`` list
indexed by ``ClassId``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from masklab.data.formats import DatasetError, Drop, Source, SourceImage, SourceInstance, load_json

COLUMNS = ("ImageId", "EncodedPixels", "ClassId", "Height", "Width")


def rle_to_mask(height: int, width: int, *, runs: str, size: tuple[int, int], record: str) -> np.ndarray:
    """Decode a Kaggle RLE string at its declared ``size`` (the shared code resizes to the image)."""
    h, w = size
    try:
        values = np.array(runs.split(), dtype=np.int64)
    except (AttributeError, ValueError):
        raise Drop("rle_out_of_bounds", f"{record}: EncodedPixels is not a list of integers") from None
    if len(values) % 2 or len(values) == 0:
        raise Drop("rle_out_of_bounds", f"{record}: EncodedPixels needs start/length pairs, got {len(values)} numbers")
    starts, lengths = values[0::2] - 1, values[1::2]
    ends = starts + lengths
    if (starts < 0).any() or (lengths <= 0).any() or (starts[1:] < ends[:-1]).any():
        raise Drop("rle_out_of_bounds", f"{record}: runs must be 1-based, positive and increasing")
    if ends[-1] > h * w:
        raise Drop("rle_out_of_bounds", f"{record}: runs end at pixel {ends[-1]} of a {h}x{w} image ({h * w})")
    flat = np.zeros(h * w, np.uint8)
    for s, e in zip(starts, ends):
        flat[s:e] = 1
    return flat.reshape(w, h).T.copy()  # column-major


def class_names_from(label_descriptions: str | Path | None, class_names) -> dict[int, str]:
    if class_names:
        return dict(enumerate(class_names))
    if label_descriptions is None:
        raise DatasetError("data.source", "iMaterialist needs label_descriptions (the competition JSON) or class_names")
    data = load_json(label_descriptions)
    cats = data.get("categories")
    if not isinstance(cats, list) or not all(isinstance(c, dict) and "id" in c and "name" in c for c in cats):
        raise DatasetError(label_descriptions, "expected 'categories': [{id, name}, ...]")
    return {int(c["id"]): str(c["name"]) for c in cats}


def read(
    annotations: str | Path,
    images: str | Path,
    label_descriptions: str | Path | None = None,
    class_names=None,
    image_ext: str = ".jpg",
) -> Source:
    path, images = Path(annotations), Path(images)
    names = class_names_from(label_descriptions, class_names)
    if not path.is_file():
        raise DatasetError(path, "RLE CSV not found")
    df = pd.read_csv(path, dtype={"ImageId": str, "ClassId": str, "EncodedPixels": str})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(path, f"missing columns {missing} (found {list(df.columns)})", "header")
    source, by_image = Source([], categories=[names[k] for k in sorted(names)]), {}
    for i, row in enumerate(df.itertuples(index=False), start=2):
        record = f"{path.name}: line {i} ({row.ImageId})"
        try:
            size = (int(row.Height), int(row.Width))
        except (TypeError, ValueError):
            raise DatasetError(
                path, f"Height/Width must be integers, got {row.Height!r}/{row.Width!r}", f"line {i}"
            ) from None
        if row.ImageId not in by_image:
            file = row.ImageId if Path(row.ImageId).suffix else f"{row.ImageId}{image_ext}"
            by_image[row.ImageId] = SourceImage(images / file, f"image {row.ImageId}", size=size)
            source.images.append(by_image[row.ImageId])
        class_id = str(row.ClassId).split("_")[0]
        name = names.get(int(class_id)) if class_id.isdigit() else None
        if name is None:
            source.issues.append(("unknown_category", record, f"ClassId {row.ClassId!r} has no name"))
            continue
        decode = partial(rle_to_mask, runs=row.EncodedPixels, size=size, record=record)
        by_image[row.ImageId].instances.append(SourceInstance(name, decode, record))
    return source
