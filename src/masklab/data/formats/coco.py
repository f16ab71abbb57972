"""COCO JSON: polygons, uncompressed and compressed RLE, ``iscrowd``; any category ids.

Categories are matched by id and carried by *name*, so 0-based, 1-based or sparse ids all work;
a background category (labelme writes ``_background_`` with id 0) is never trained as a class.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

from masklab.data.formats import (
    DatasetError,
    Drop,
    Source,
    SourceImage,
    SourceInstance,
    declared_size,
    load_json,
    polygons_to_mask,
)

BACKGROUND_NAMES = ("_background_", "__background__", "background")


def _rle_to_mask(height: int, width: int, *, rle: dict, record: str) -> np.ndarray:
    """Decode an RLE at its own size (the shared code resizes a mismatch); runs past the image are dropped."""
    try:
        h, w = (int(v) for v in rle["size"])
        if h <= 0 or w <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise Drop("rle_out_of_bounds", f"{record}: RLE size {rle['size']!r} is not [height, width]") from None
    counts = rle["counts"]
    if isinstance(counts, list):
        if any(c < 0 for c in counts) or sum(counts) > h * w:
            raise Drop("rle_out_of_bounds", f"{record}: RLE runs cover {sum(counts)} pixels, image has {h * w}")
        rle = mask_utils.frPyObjects({"counts": counts, "size": [h, w]}, h, w)
    else:
        rle = {"counts": counts.encode("ascii") if isinstance(counts, str) else counts, "size": [h, w]}
    try:  # pycocotools refuses runs past h*w with a ValueError ("Invalid RLE mask representation")
        return mask_utils.decode(rle).astype(np.uint8)
    except (ValueError, TypeError) as exc:
        raise Drop("rle_out_of_bounds", f"{record}: RLE does not fit its {h}x{w} size ({exc})") from None


def _decoder(seg, record: str, inst: SourceInstance):
    if isinstance(seg, list) and all(isinstance(p, list) for p in seg):
        return partial(polygons_to_mask, polygons=seg, record=record, notes=inst.notes)
    if isinstance(seg, list):
        raise Drop("empty_mask", f"{record}: segmentation is not a list of polygons [[x1, y1, x2, y2, ...], ...]")
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        return partial(_rle_to_mask, rle=seg, record=record)
    raise Drop("empty_mask", f"{record}: no usable segmentation ({type(seg).__name__})")


def _require_lists(data: dict, path: Path) -> None:
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(path, f"COCO JSON needs a '{key}' list (keys found: {sorted(data)})")


def read(annotations: str | Path, images: str | Path | None = None, background_names=BACKGROUND_NAMES) -> Source:
    """Read a COCO JSON; image ``file_name``s are relative to ``images`` (default: the JSON's folder)."""
    path = Path(annotations)
    data = load_json(path)
    _require_lists(data, path)
    root = Path(images) if images else path.parent
    names, background = {}, set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetError(path, "a category needs 'id' and 'name'", f"categories[{i}]")
        if cat["id"] in names or cat["id"] in background:  # which of the two would its annotations mean?
            raise DatasetError(path, f"category id {cat['id']!r} is used twice", f"categories[{i}]")
        if str(cat["name"]).lower() in background_names:
            background.add(cat["id"])
        else:
            names[cat["id"]] = str(cat["name"])
    by_id = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DatasetError(path, "an image needs 'id' and 'file_name'", f"images[{i}]")
        if im["id"] in by_id:  # its annotations would be drawn on the one listed last
            raise DatasetError(
                path,
                f"image id {im['id']!r} is used twice ({by_id[im['id']].path.name}, {im['file_name']})",
                f"images[{i}]",
            )
        record = f"{path.name}: image {im['id']} ({im['file_name']})"
        size = declared_size(im.get("height"), im.get("width"), path, f"images[{i}]")
        by_id[im["id"]] = SourceImage(root / im["file_name"], record, size=size)
    source = Source(list(by_id.values()), categories=list(dict.fromkeys(names.values())))
    for name in (n for n, count in Counter(names.values()).items() if count > 1):  # in file order
        ids = [k for k, n in names.items() if n == name]
        source.issues.append(
            (
                "category_merged",
                f"{path.name}: category {name!r}",
                f"{path.name}: categories {ids} are all named {name!r}: their instances are one class",
            )
        )
    for i, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id", f"#{i}") if isinstance(ann, dict) else f"#{i}"
        _add_annotation(source, by_id, names, background, ann, f"{path.name}: annotation {ann_id}", path)
    return source


def _add_annotation(source: Source, by_id, names, background, ann, record: str, path: Path) -> None:
    if not isinstance(ann, dict):
        raise DatasetError(path, f"an annotation must be an object, got {type(ann).__name__}", record)
    image_id, cat = ann.get("image_id"), ann.get("category_id")
    image = by_id.get(image_id)
    if image is None and isinstance(image_id, str) and image_id.strip().isdigit() and int(image_id) in by_id:
        image = by_id[int(image_id)]  # "1" for the image whose id is 1: a JSON writer's slip, not another image
        source.issues.append(
            ("image_id_type", record, f"image_id {image_id!r} is a string: matched to image {int(image_id)}")
        )
    if image is None:
        return source.issues.append(("unknown_image", record, f"image_id {image_id!r} is not in 'images'"))
    if cat in background:
        return source.issues.append(("background_category", record, f"category {cat} is the background"))
    if cat not in names:
        return source.issues.append(("unknown_category", record, f"category_id {cat!r} is not in 'categories'"))
    box = ann.get("bbox")
    inst = SourceInstance(
        names[cat],
        decode=None,
        record=record,
        iscrowd=int(ann.get("iscrowd", 0) or 0),
        box=(box[0], box[1], box[0] + box[2], box[1] + box[3]) if isinstance(box, list) and len(box) == 4 else None,
        source_id=ann.get("id"),
    )
    try:
        inst.decode = _decoder(ann.get("segmentation"), record, inst)
    except Drop as drop:
        return source.issues.append((drop.rule, record, drop.detail))
    image.instances.append(inst)
