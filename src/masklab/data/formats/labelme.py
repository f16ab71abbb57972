"""labelme JSON: one file per image, its ``shapes`` (polygon, rectangle, circle) and its ``imagePath``.

Shapes with the same ``label`` and ``group_id`` are one instance (an occluded object drawn as several
polygons), as labelme's own ``labelme2coco.py`` groups them; a shape without ``group_id`` is an
instance of its own. Labels in ``ignore_labels`` (labelme's ``__ignore__`` and ``_background_``) are
dropped and reported. ``labels`` is labelme's ``labels.txt`` (one class per line): it fixes the class
order, the same order ``labelme2coco.py`` gives the categories, and a label outside it is reported;
without it the classes are the labels seen, sorted. Line, linestrip and point shapes have no area, and
labelme 5's ``mask`` shapes are not read: dropped and reported. Images come from each file's
``imagePath``, relative to that file (or by file name from ``images``); the embedded ``imageData`` is not
used.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from masklab.data.formats import (DatasetError, Drop, Source, SourceImage, SourceInstance, ellipse_polygon, load_json,
                                  polygons_to_mask)

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
    raise Drop("bad_shape", f"{record}: shape_type {kind!r} has no area or is not read (polygon, rectangle, circle)")


def read(annotations: str | Path, images: str | Path | None = None, labels: str | Path | None = None,
         ignore_labels=IGNORE_LABELS) -> Source:
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
        size = (int(data["imageHeight"]), int(data["imageWidth"])) if data.get("imageHeight") and data.get("imageWidth") else None
        image = SourceImage(Path(images) / name.name if images else file.parent / name, file.name, size=size)
        groups: dict[tuple, tuple[list, str]] = {}  # (label, group) -> (polygons, record of its first shape)
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
            try:
                polygon = shape_to_polygon(shape, record)
            except Drop as drop:
                source.issues.append((drop.rule, record, drop.detail))
                continue
            group = shape.get("group_id")
            groups.setdefault((label, ("shape", i) if group is None else group), ([], record))[0].append(polygon)
        for (label, _), (polygons, record) in groups.items():
            inst = SourceInstance(label, decode=None, record=record)
            inst.decode = partial(polygons_to_mask, polygons=polygons, record=record, notes=inst.notes)
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
