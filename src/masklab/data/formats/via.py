"""VGG Image Annotator (VIA) 1.x and 2.x project JSON: polygon, polyline, rect, circle, ellipse regions.

1.x files are ``{key: {filename, size, regions}}``; 2.x project files keep the same records under
``_via_img_metadata``. ``regions`` is a dict (1.x) or a list (2.x). ``size`` is the file size in
bytes, not the image size. The class is ``region_attributes[class_attribute]`` (a string, or a
checkbox dict whose first true key is taken); regions without it get ``default_class`` (the
balloon sample has no attributes at all) or are dropped. All shapes become polygons and are
rasterised like COCO polygons (pycocotools); circles and ellipses with 64 vertices.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from masklab.data.formats import (DatasetError, Drop, Source, SourceImage, SourceInstance, ellipse_polygon, load_json,
                                  polygons_to_mask)


def shape_to_polygon(shape: dict, record: str) -> list[float]:
    """A VIA ``shape_attributes`` dict -> one flat polygon [x1, y1, ...] in pixels."""
    name = shape.get("name")
    try:
        if name in ("polygon", "polyline"):  # a polyline around an object is closed like a polygon
            xs, ys = shape["all_points_x"], shape["all_points_y"]
            if len(xs) != len(ys):
                raise Drop("polygon_too_few_points", f"{record}: {len(xs)} x but {len(ys)} y coordinates")
            return [float(v) for xy in zip(xs, ys) for v in xy]
        if name == "rect":
            x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
            return [x, y, x + w, y, x + w, y + h, x, y + h]
        if name == "circle":
            return ellipse_polygon(float(shape["cx"]), float(shape["cy"]), float(shape["r"]), float(shape["r"]))
        if name == "ellipse":
            return ellipse_polygon(float(shape["cx"]), float(shape["cy"]), float(shape["rx"]), float(shape["ry"]),
                                   float(shape.get("theta", 0.0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise Drop("bad_shape", f"{record}: {name} without usable {exc}") from None
    raise Drop("bad_shape", f"{record}: unsupported shape {name!r} (polygon, polyline, rect, circle, ellipse)")


def region_class(attributes: dict, class_attribute: str, default_class: str | None) -> str | None:
    value = (attributes or {}).get(class_attribute)
    if isinstance(value, dict):  # checkbox attribute: {"mask": true, "hat": false}
        value = next((k for k, on in value.items() if on), None)
    return str(value) if value not in (None, "") else default_class


def read(annotations: str | Path, images: str | Path | None = None, class_attribute: str = "name",
         default_class: str | None = None) -> Source:
    """Read a VIA 1.x or 2.x JSON; images are looked up by ``filename`` in ``images`` (default: the JSON's folder)."""
    path = Path(annotations)
    data = load_json(path)
    records = data.get("_via_img_metadata", data)
    if not isinstance(records, dict):
        raise DatasetError(path, "'_via_img_metadata' must be an object of image records")
    root, source = Path(images) if images else path.parent, Source([])
    for key, rec in records.items():
        if not isinstance(rec, dict) or "filename" not in rec:
            raise DatasetError(path, "not a VIA image record (needs 'filename' and 'regions')", f"record {key!r}")
        image = SourceImage(root / rec["filename"], f"{path.name}: {rec['filename']}")
        regions = rec.get("regions") or {}
        for i, region in (regions.items() if isinstance(regions, dict) else enumerate(regions)):
            _add_region(source, image, region, f"{path.name}: {rec['filename']} region {i}", class_attribute, default_class)
        source.images.append(image)
    return source


def _add_region(source, image, region, record, class_attribute, default_class) -> None:
    try:
        polygon = shape_to_polygon(region.get("shape_attributes") or {}, record)
    except Drop as drop:
        return source.issues.append((drop.rule, record, drop.detail))
    name = region_class(region.get("region_attributes"), class_attribute, default_class)
    if name is None:
        return source.issues.append(("unknown_category", record, f"no '{class_attribute}' region attribute "
                                     "(set data.source.class_attribute or data.source.default_class)"))
    inst = SourceInstance(name, decode=None, record=record)
    inst.decode = partial(polygons_to_mask, polygons=[polygon], record=record, notes=inst.notes)
    image.instances.append(inst)
