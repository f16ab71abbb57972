"""OpenImages v5 segmentation: ``*-annotations-object-segmentation.csv`` + one mask PNG per instance.

CSV columns: ``MaskPath, ImageID, LabelName, BoxID, BoxXMin, BoxXMax, BoxYMin, BoxYMax, ...``
(box corners normalised to [0, 1]). Masks are binary PNGs at *their own* resolution, usually not the
image's: the shared pipeline resizes each mask to its image with nearest-neighbour and records the
fix (seed 000 hit exactly this). ``LabelName`` (``/m/...``) is named through the class-description
CSV (``LabelName,DisplayName``, with or without a header row). Images are ``<images>/<ImageID>.jpg``.
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from masklab.data.formats import DatasetError, Drop, Source, SourceImage, SourceInstance

COLUMNS = ("MaskPath", "ImageID", "LabelName", "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax")


def read_class_descriptions(path: Path) -> dict[str, str]:
    if not Path(path).is_file():
        raise DatasetError(path, "class-description CSV not found")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    if rows and rows[0][:2] == ["LabelName", "DisplayName"]:
        rows = rows[1:]
    bad = next((i for i, r in enumerate(rows) if len(r) < 2), None)
    if bad is not None:
        raise DatasetError(path, "expected 'LabelName,DisplayName' rows", f"row {bad + 1}")
    return {r[0]: r[1] for r in rows}


def _mask(height: int, width: int, *, path: Path, record: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return (np.array(im.convert("L")) > 0).astype(np.uint8)
    except (OSError, ValueError) as exc:
        raise Drop("image_unreadable", f"{record}: mask {path.name} unreadable ({exc})") from None


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise DatasetError(path, "segmentation CSV not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(path, f"missing columns {missing} (found {reader.fieldnames})", "header")
        return list(reader)


def read(
    annotations: str | Path,
    masks: str | Path,
    images: str | Path,
    class_descriptions: str | Path,
    image_ext: str = ".jpg",
) -> Source:
    path, masks, images = Path(annotations), Path(masks), Path(images)
    names = read_class_descriptions(Path(class_descriptions))
    source, by_image = Source([]), {}
    for i, row in enumerate(_rows(path), start=2):  # line 1 is the header
        if any(row.get(c) is None for c in COLUMNS):  # csv gives None to the columns a short line lacks
            raise DatasetError(
                path,
                f"the line has {sum(v is not None for v in row.values())} of the columns {list(row)} (cut short?)",
                f"line {i}",
            )
        record = f"{path.name}: line {i} ({row['MaskPath']})"
        name = names.get(row["LabelName"])
        if name is None:
            source.issues.append(("unknown_category", record, f"{row['LabelName']} is not in the class descriptions"))
            continue
        try:
            box = tuple(float(row[k]) for k in ("BoxXMin", "BoxYMin", "BoxXMax", "BoxYMax"))
        except ValueError:
            box = None
        if row["ImageID"] not in by_image:
            by_image[row["ImageID"]] = SourceImage(images / f"{row['ImageID']}{image_ext}", f"image {row['ImageID']}")
            source.images.append(by_image[row["ImageID"]])
        by_image[row["ImageID"]].instances.append(
            SourceInstance(
                name, partial(_mask, path=masks / row["MaskPath"], record=record), record, box=box, box_normalized=True
            )
        )
    return source
