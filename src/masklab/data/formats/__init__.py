"""Annotation readers: one module per source format, each returning a :class:`Source`.

A reader only parses its format. It yields :class:`SourceImage` records whose instances carry a
``decode(height, width)`` callable returning the H×W mask as the format defines it; everything
after that (image checks, resizing, the validation rules, the canonical COCO JSON) is shared, in
:mod:`masklab.data.canonical`. Add a format = add a module here + a ``conf/data/<format>.yaml``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from masklab import MasklabError


class DatasetError(MasklabError):
    """A source file that cannot be used at all: one line naming the file, the record and the problem."""

    def __init__(self, file, problem: str, record: str | None = None):
        where = f"{file}" + (f": {record}" if record else "")
        super().__init__(f"{where}: {problem}")


class Drop(Exception):
    """Raised by a decoder: this annotation cannot be used. ``rule`` names the validation rule."""

    def __init__(self, rule: str, detail: str):
        super().__init__(detail)
        self.rule, self.detail = rule, detail


@dataclass
class SourceInstance:
    category: str  # class name as written in the source
    decode: Callable[[int, int], np.ndarray]  # (image h, w) -> mask (its own size; may raise Drop)
    record: str  # where it came from, for the report
    iscrowd: int = 0
    box: tuple[float, float, float, float] | None = None  # the source's own box, xyxy px, if it has one
    box_normalized: bool = False  # box given in [0, 1] of the image size (OpenImages)
    source_id: object = None  # the source's annotation id, if it has one
    notes: list[tuple[str, str]] = field(default_factory=list)  # (rule, detail) fixes made while decoding


@dataclass
class SourceImage:
    path: Path
    record: str
    instances: list[SourceInstance] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (h, w) the source declares, if any
    split: str | None = None  # a split the source gives, if any
    data: Callable[[], bytes] | None = None  # the image file's bytes when the source embeds them (labelme's
    # imageData): used when ``path`` is not a file


@dataclass
class Source:
    images: list[SourceImage]
    categories: list[str] | None = None  # declared classes in order; None = the instances' names
    issues: list[tuple[str, str, str]] = field(default_factory=list)  # (rule, record, detail) dropped by the reader


def load_json(path: Path, expect: type = dict):
    """Parse a JSON file or raise one clear :class:`DatasetError`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, expect):
        raise DatasetError(path, f"expected a JSON {expect.__name__} at the top level, got {type(data).__name__}")
    return data


def declared_size(height, width, file, record: str) -> tuple[int, int] | None:
    """The (h, w) an annotation declares for its image; None when it declares none (missing, null or 0).

    Anything else that is not a positive whole number is a :class:`DatasetError`.
    """
    if not height or not width:
        return None
    try:
        h, w = int(height), int(width)
        if h != float(height) or w != float(width) or h < 0 or w < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise DatasetError(
            file, f"image height/width must be positive integers, got {height!r}/{width!r}", record
        ) from None
    return h, w


ELLIPSE_VERTICES = 64


def ellipse_polygon(cx, cy, rx, ry, theta=0.0) -> list[float]:
    """An ellipse (a circle when rx == ry), rotated by ``theta`` radians, as a flat polygon of 64 vertices
    (VIA's circles and ellipses, labelme's circles)."""
    pts = []
    for k in range(ELLIPSE_VERTICES):
        a = 2 * math.pi * k / ELLIPSE_VERTICES
        x, y = rx * math.cos(a), ry * math.sin(a)
        pts += [cx + x * math.cos(theta) - y * math.sin(theta), cy + x * math.sin(theta) + y * math.cos(theta)]
    return pts


def polygons_to_mask(height: int, width: int, *, polygons, record: str = "", notes: list | None = None) -> np.ndarray:
    """Rasterise flat [x1, y1, x2, y2, ...] polygons with pycocotools (COCO's own definition of a polygon mask).

    Polygons with fewer than 3 points are skipped (noted as a fix); if none is left the annotation is dropped.
    """
    import pycocotools.mask as mask_utils

    try:
        good = [[float(v) for v in p] for p in polygons if len(p) >= 6 and len(p) % 2 == 0]
    except (TypeError, ValueError) as exc:  # a coordinate like "x" or null
        raise Drop("polygon_too_few_points", f"{record}: polygon with a coordinate that is no number ({exc})") from None
    if not all(np.isfinite(p).all() for p in good):
        raise Drop("polygon_too_few_points", f"{record}: polygon with non-finite coordinates")
    if not good:
        raise Drop("polygon_too_few_points", f"{record}: polygon with fewer than 3 points")
    if len(good) < len(polygons) and notes is not None:
        notes.append(
            (
                "polygon_too_few_points",
                f"{record}: {len(polygons) - len(good)} of {len(polygons)} polygons "
                "had fewer than 3 points and were skipped",
            )
        )
    xs, ys = np.concatenate([p[0::2] for p in good]), np.concatenate([p[1::2] for p in good])
    slack = 1.0  # px: annotation tools let a click on the border land a fraction of a pixel past it
    if notes is not None and (
        xs.min() < -slack or ys.min() < -slack or xs.max() > width + slack or ys.max() > height + slack
    ):
        notes.append(
            (
                "polygon_outside_image",
                f"{record}: polygon spans x {xs.min():g}..{xs.max():g}, y {ys.min():g}.."
                f"{ys.max():g}, outside the {width}x{height} image: clipped to it",
            )
        )
    rle = mask_utils.merge(mask_utils.frPyObjects(good, height, width))
    return mask_utils.decode(rle).astype(np.uint8)
