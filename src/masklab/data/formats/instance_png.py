"""Instance-id mask PNGs: one PNG per image whose pixel value is the instance id (0 = background).

As PennFudanPed: ``PNGImages/FudanPed00001.png`` + ``PedMasks/FudanPed00001_mask.png``. Palette
PNGs are read as their indices (PIL), so the ids are the values the annotator wrote. Every
instance gets ``class_name``, or ``class_of_id[id]`` when a mapping is given.
"""

from __future__ import annotations

from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from PIL import Image

from masklab.data.formats import DatasetError, Source, SourceImage, SourceInstance

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@lru_cache(maxsize=4)
def load_ids(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im if im.mode in ("P", "L", "I", "I;16") else im.convert("L"))


def _instance(height: int, width: int, *, path: Path, value: int) -> np.ndarray:
    return (load_ids(path) == value).astype(np.uint8)


def read(
    images: str | Path,
    masks: str | Path,
    mask_suffix: str = "_mask",
    mask_ext: str = ".png",
    class_name: str = "object",
    class_of_id: dict | None = None,
) -> Source:
    images, masks = Path(images), Path(masks)
    for folder in (images, masks):
        if not folder.is_dir():
            raise DatasetError(folder, "folder not found")
    source = Source([], categories=sorted(set(class_of_id.values())) if class_of_id else [class_name])
    for image_path in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        mask_path = masks / f"{image_path.stem}{mask_suffix}{mask_ext}"
        record = f"{image_path.name}"
        if not mask_path.is_file():
            source.issues.append(("mask_missing", record, f"no mask {mask_path.name} in {masks}"))
            continue
        try:
            ids = load_ids(mask_path)
        except OSError as exc:
            source.issues.append(("image_unreadable", f"{mask_path.name}", f"mask PNG unreadable ({exc})"))
            continue
        image = SourceImage(image_path, record)
        for value in np.unique(ids[ids > 0]).tolist():
            name = (class_of_id or {}).get(value, class_name if not class_of_id else None)
            inst_record = f"{mask_path.name} id {value}"
            if name is None:
                source.issues.append(("unknown_category", inst_record, f"id {value} is not in class_of_id"))
                continue
            image.instances.append(SourceInstance(name, partial(_instance, path=mask_path, value=value), inst_record))
        source.images.append(image)
    return source
