"""labelme JSON: one file per image, its ``shapes`` (polygon, rectangle, circle, mask) and its ``imagePath``.

Shapes with the same ``label`` and ``group_id`` are one instance (an occluded object drawn as several
polygons), as labelme's own ``labelme2coco.py`` groups them; a shape without ``group_id`` is an
instance of its own. Labels in ``ignore_labels`` (labelme's ``__ignore__`` and ``_background_``) are
dropped and reported. ``labels`` is labelme's ``labels.txt`` (one class per line): it fixes the class
order, the same order ``labelme2coco.py`` gives the categories, and a label outside it is reported;
without it the classes are the labels seen, sorted. Line, linestrip and point shapes have no area:
dropped and reported. A ``mask`` shape (labelme 5's AI masks) is a base64 PNG bitmap whose top-left
pixel is its first point, as labelme's ``shapes_to_label`` pastes it. Images come from each file's
``imagePath``, relative to that file (or by file name from ``images``); where that file is missing, the
image embedded in the JSON (``imageData``, what labelme saves unless run with ``--nodata``) is used.
"""

from __future__ import annotations

import base64
import binascii
import io
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from masklab.data.formats import (
    DatasetError,
    Drop,
    Source,
    SourceImage,
    SourceInstance,
    declared_size,
    ellipse_polygon,
    load_json,
    polygons_to_mask,
)

IGNORE_LABELS = ("__ignore__", "_background_")


def shape_to_polygon(shape: dict, record: str) -> list[float]:
    """A labelme shape -> one flat polygon [x1, y1, ...] in pixels (a circle with 64 vertices)."""
    kind = shape.get("shape_type") or "polygon"  # labelme 3 wrote no shape_type: polygons only
    try:
        points = [(float(x), float(y)) for x, y in shape["points"]]
        if kind == "polygon":
            return [v for xy in points for v in xy]
        if kind == "rectangle":  # two opposite corners, in the order they were dragged
            (x1, y1), (x2, y2) = points
            x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
            return [x1, y1, x2, y1, x2, y2, x1, y2]
        if kind == "circle":  # the centre and a point on the circle
            (cx, cy), (px, py) = points
            r = ((px - cx) ** 2 + (py - cy) ** 2) ** 0.5
            return ellipse_polygon(cx, cy, r, r)
    except (KeyError, TypeError, ValueError) as exc:
        raise Drop("bad_shape", f"{record}: {kind} without usable points ({type(exc).__name__}: {exc})") from None
    raise Drop("bad_shape", f"{record}: shape_type {kind!r} has no area (polygon, rectangle, circle and mask are read)")


def shape_to_bitmap(shape: dict, record: str) -> tuple[int, int, int, int, str]:
    """A labelme ``mask`` shape -> (x1, y1, x2, y2: its box's corner pixels, its base64 PNG), decoded later."""
    try:
        (x1, y1), (x2, y2) = ((int(float(x)), int(float(y))) for x, y in shape["points"])
    except (KeyError, TypeError, ValueError) as exc:
        raise Drop("bad_shape", f"{record}: mask without its two box points ({type(exc).__name__}: {exc})") from None
    if not isinstance(shape.get("mask"), str) or not shape["mask"]:
        raise Drop("bad_shape", f"{record}: mask shape without its 'mask' (a base64 PNG)")
    return x1, y1, x2, y2, shape["mask"]


def _bitmap(x1: int, y1: int, x2: int, y2: int, encoded: str, record: str) -> np.ndarray:
    """The bitmap of a mask shape; it must fill its box, as labelme's ``shapes_to_label`` requires."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(encoded, validate=True))) as im:
            piece = np.asarray(im.convert("L")) > 0
    except (binascii.Error, OSError, ValueError) as exc:  # PIL names its BytesIO: "cannot identify image file <...>"
        why = "its bytes are no image" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise Drop("bad_shape", f"{record}: its 'mask' is not a base64 PNG ({why})") from None
    if piece.shape != (y2 - y1 + 1, x2 - x1 + 1):
        raise Drop(
            "bad_shape",
            f"{record}: its {piece.shape[1]}x{piece.shape[0]} mask does not fill its box "
            f"({x1}, {y1})-({x2}, {y2}), {x2 - x1 + 1}x{y2 - y1 + 1} px",
        )
    return piece


def decode(height: int, width: int, *, polygons, bitmaps, record: str, notes: list) -> np.ndarray:
    """One instance's mask: its polygons rasterised as COCO does, with its mask shapes' bitmaps pasted in (at
    their box's top-left pixel; a bitmap running past the image is cut at its edge)."""
    if polygons:
        mask = polygons_to_mask(height, width, polygons=polygons, record=record, notes=notes)
    else:
        mask = np.zeros((height, width), np.uint8)
    for *box, encoded, where in bitmaps:
        piece = _bitmap(*box, encoded, where)
        x, y = box[:2]
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + piece.shape[0], height), min(x + piece.shape[1], width)
        if y1 > y0 and x1 > x0:
            mask[y0:y1, x0:x1] |= piece[y0 - y : y1 - y, x0 - x : x1 - x]
    return mask


def _embedded_image(file: Path) -> bytes:
    """The image labelme embedded in ``file`` (its ``imageData``), read again when needed: held for every
    file at once it could fill the memory."""
    return base64.b64decode(load_json(file)["imageData"])


def read(
    annotations: str | Path,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    ignore_labels=IGNORE_LABELS,
) -> Source:
    """Read a folder of labelme JSON files (searched recursively) or one file."""
    path = Path(annotations)
    if not path.exists():
        raise DatasetError(path, "not found (a labelme .json file or a folder of them)")
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    if not files:
        raise DatasetError(path, "no labelme .json files in this folder")
    declared = _labels(Path(labels), ignore_labels) if labels else None
    source = Source([], categories=declared)
    for file in files:
        data = load_json(file)
        if not isinstance(data.get("shapes"), list) or not data.get("imagePath"):
            raise DatasetError(file, "not a labelme file (needs a 'shapes' list and 'imagePath')")
        name = Path(str(data["imagePath"]).replace("\\", "/"))  # labelme on Windows writes backslashes
        size = declared_size(data.get("imageHeight"), data.get("imageWidth"), file, "imageHeight/imageWidth")
        image = SourceImage(
            Path(images) / name.name if images else file.parent / name,
            file.name,
            size=size,
            data=partial(_embedded_image, file) if data.get("imageData") else None,
        )
        groups: dict[
            tuple, tuple[list, list, str]
        ] = {}  # (label, group) -> (polygons, bitmaps, its first shape's record)
        for i, shape in enumerate(data["shapes"]):
            record = f"{file.name}: shape {i}"
            if not isinstance(shape, dict):
                source.issues.append(("bad_shape", record, f"{record}: not a shape object"))
                continue
            label = str(shape.get("label", ""))
            if label in ignore_labels:
                source.issues.append(("background_category", record, f"label {label!r} is an ignore/background label"))
                continue
            if declared is not None and label not in declared:
                source.issues.append(("unknown_category", record, f"label {label!r} is not in {labels}"))
                continue
            bitmap = shape.get("shape_type") == "mask"
            try:
                part = (*shape_to_bitmap(shape, record), record) if bitmap else shape_to_polygon(shape, record)
            except Drop as drop:
                source.issues.append((drop.rule, record, drop.detail))
                continue
            group = shape.get("group_id")
            polygons, bitmaps, _ = groups.setdefault(
                (label, ("shape", i) if group is None else group), ([], [], record)
            )
            (bitmaps if bitmap else polygons).append(part)
        for (label, _), (polygons, bitmaps, record) in groups.items():
            inst = SourceInstance(label, decode=None, record=record)
            inst.decode = partial(decode, polygons=polygons, bitmaps=bitmaps, record=record, notes=inst.notes)
            image.instances.append(inst)
        source.images.append(image)
    if declared is None:
        source.categories = sorted({inst.category for image in source.images for inst in image.instances})
    return source


def _labels(path: Path, ignore_labels) -> list[str]:
    """labelme's labels.txt: one class per line, its ``__ignore__``/``_background_`` lines left out."""
    if not path.is_file():
        raise DatasetError(path, "labels file not found (labelme's labels.txt: one class per line)")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and n not in ignore_labels]
    if not names:
        raise DatasetError(path, "no class names in it")
    return names
