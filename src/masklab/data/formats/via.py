"""VGG Image Annotator (VIA) 1.x, 2.x and 3.x project JSON: polygon, polyline, rect, circle, ellipse regions.

1.x files are ``{key: {filename, size, regions}}``; 2.x project files keep the same records under
``_via_img_metadata``. ``regions`` is a dict (1.x) or a list (2.x). ``size`` is the file size in
bytes, not the image size. The class is ``region_attributes[class_attribute]`` (a string, or a
checkbox dict whose first true key is taken); regions without it get ``default_class`` (the
balloon sample has no attributes at all) or are dropped. All shapes become polygons and are
rasterised like COCO polygons (pycocotools); circles and ellipses with 64 vertices.

3.x project files (``project``, ``file``, ``view``, ``attribute``, ``metadata``) keep each region as
``xy = [shape id, coordinates...]`` of the image of its view, and its attributes as ``av = {attribute
id: value}``; the class is the attribute named ``class_attribute`` (an option id of a radio, select
or checkbox attribute is turned into the option's name). Their shapes are mapped onto the 2.x ones
(plus 3.x's extreme rectangle: the box of its four points, and extreme circle: the circle through
its three points).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from masklab.data.formats import (
    DatasetError,
    Drop,
    Source,
    SourceImage,
    SourceInstance,
    ellipse_polygon,
    load_json,
    polygons_to_mask,
)


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
            return ellipse_polygon(
                float(shape["cx"]),
                float(shape["cy"]),
                float(shape["rx"]),
                float(shape["ry"]),
                float(shape.get("theta", 0.0)),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise Drop("bad_shape", f"{record}: {name} without usable {exc}") from None
    raise Drop("bad_shape", f"{record}: unsupported shape {name!r} (polygon, polyline, rect, circle, ellipse)")


def region_class(attributes: dict, class_attribute: str, default_class: str | None) -> str | None:
    value = (attributes or {}).get(class_attribute)
    if isinstance(value, dict):  # checkbox attribute: {"mask": true, "hat": false}
        value = next((k for k, on in value.items() if on), None)
    return str(value) if value not in (None, "") else default_class


def read(
    annotations: str | Path,
    images: str | Path | None = None,
    class_attribute: str = "name",
    default_class: str | None = None,
) -> Source:
    """Read a VIA 1.x, 2.x or 3.x JSON; images are looked up by file name in ``images`` (default: the JSON's folder)."""
    path = Path(annotations)
    data = load_json(path)
    root = Path(images) if images else path.parent
    if {"project", "file", "metadata"} <= data.keys():
        return _read_3x(path, data, root, class_attribute, default_class)
    records = data.get("_via_img_metadata", data)
    if not isinstance(records, dict):
        raise DatasetError(path, "'_via_img_metadata' must be an object of image records")
    source = Source([])
    for key, rec in records.items():
        if not isinstance(rec, dict) or "filename" not in rec:
            raise DatasetError(path, "not a VIA image record (needs 'filename' and 'regions')", f"record {key!r}")
        image = SourceImage(root / rec["filename"], f"{path.name}: {rec['filename']}")
        regions = rec.get("regions") or {}
        if not isinstance(regions, (dict, list)):
            raise DatasetError(
                path, f"'regions' is a {type(regions).__name__}, not a list or object of regions", f"record {key!r}"
            )
        for i, region in regions.items() if isinstance(regions, dict) else enumerate(regions):
            record = f"{path.name}: {rec['filename']} region {i}"
            if (why := _malformed(region)) is not None:
                source.issues.append(("bad_shape", record, why))
                continue
            name = region_class(region.get("region_attributes"), class_attribute, default_class)
            _add_region(
                source,
                image,
                region.get("shape_attributes") or {},
                name,
                record,
                class_attribute,
                sorted(region.get("region_attributes") or {}),
            )
        source.images.append(image)
    return source


def _malformed(region) -> str | None:
    """Why a VIA 2 region is no ``{shape_attributes: {...}, region_attributes: {...}}``, or None when it is one."""
    if not isinstance(region, dict):
        return f"the region is a {type(region).__name__}, not an object with 'shape_attributes'"
    for key in ("shape_attributes", "region_attributes"):
        if region.get(key) is not None and not isinstance(region[key], dict):
            return f"'{key}' is a {type(region[key]).__name__}, not an object"
    return None


def _add_region(
    source, image, shape: dict, name: str | None, record: str, class_attribute: str, attributes: list[str] = ()
) -> None:
    try:
        polygon = shape_to_polygon(shape, record)
    except Drop as drop:
        return source.issues.append((drop.rule, record, drop.detail))
    if name is None:
        has = f"its attributes: {', '.join(attributes)}" if attributes else "it has no attributes"
        return source.issues.append(
            (
                "unknown_category",
                record,
                f"no '{class_attribute}' region attribute ({has}; "
                "set data.source.class_attribute=<one of them> or data.source.default_class)",
            )
        )
    inst = SourceInstance(name, decode=None, record=record)
    inst.decode = partial(polygons_to_mask, polygons=[polygon], record=record, notes=inst.notes)
    image.instances.append(inst)


#: VIA 3's shape ids (``_VIA_RSHAPE``) -> the 2.x shape name
SHAPES_3X = {
    1: "point",
    2: "rect",
    3: "circle",
    4: "ellipse",
    5: "line",
    6: "polyline",
    7: "polygon",
    8: "extreme_rectangle",
    9: "extreme_circle",
}
COORDINATES_3X = {"rect": 4, "circle": 3, "ellipse": 4, "extreme_rectangle": 8, "extreme_circle": 6}


def shape_3x(xy: list, record: str) -> dict:
    """A VIA 3 ``xy`` ([shape id, coordinates...]) -> the VIA 2 ``shape_attributes`` it means."""
    try:
        return _shape_3x(xy)
    except (TypeError, ValueError, IndexError) as exc:
        raise Drop("bad_shape", f"{record}: region xy {xy!r} unusable ({exc})") from None


def _shape_3x(xy: list) -> dict:
    name, c = SHAPES_3X.get(xy[0], f"shape id {xy[0]}"), xy[1:]
    if len(c) < COORDINATES_3X.get(name, 0):
        raise ValueError(f"a {name} needs {COORDINATES_3X[name]} coordinates, it has {len(c)}")
    if name in ("polygon", "polyline"):
        return {"name": name, "all_points_x": c[0::2], "all_points_y": c[1::2]}
    if name == "rect":
        return {"name": name, "x": c[0], "y": c[1], "width": c[2], "height": c[3]}
    if name == "circle":
        return {"name": name, "cx": c[0], "cy": c[1], "r": c[2]}
    if name == "ellipse":
        return {"name": name, "cx": c[0], "cy": c[1], "rx": c[2], "ry": c[3], **({"theta": c[4]} if len(c) > 4 else {})}
    if name == "extreme_rectangle":  # the left-, top-, right- and bottom-most points, in any order
        xs, ys = [float(v) for v in c[0:8:2]], [float(v) for v in c[1:8:2]]
        return {"name": "rect", "x": min(xs), "y": min(ys), "width": max(xs) - min(xs), "height": max(ys) - min(ys)}
    if name == "extreme_circle":  # three points of the circle: its circumcircle
        (ax, ay), (bx, by), (cx, cy) = np.array(c[:6], float).reshape(3, 2).tolist()
        d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
        if not d:
            raise ValueError("its three points are on one line")
        ux = ((ax**2 + ay**2) * (by - cy) + (bx**2 + by**2) * (cy - ay) + (cx**2 + cy**2) * (ay - by)) / d
        uy = ((ax**2 + ay**2) * (cx - bx) + (bx**2 + by**2) * (ax - cx) + (cx**2 + cy**2) * (bx - ax)) / d
        return {"name": "circle", "cx": ux, "cy": uy, "r": float(np.hypot(ax - ux, ay - uy))}
    return {"name": name}  # a point, a line or an unknown id: shape_to_polygon names it


def _class_3x(av: dict, attribute: dict | None, aid, default_class: str | None) -> str | None:
    value = (av or {}).get(aid) if aid is not None else None
    if value not in (None, "") and (attribute or {}).get("options"):
        value = str(value).split(",")[0]  # a checkbox keeps "id1,id2": the first, as for 2.x checkboxes
        value = attribute["options"].get(value, value)
    return str(value) if value not in (None, "") else default_class


def _read_3x(path: Path, data: dict, root: Path, class_attribute: str, default_class: str | None) -> Source:
    files, views, attributes, metadata = (data.get(k) for k in ("file", "view", "attribute", "metadata"))
    if not all(isinstance(v, dict) for v in (files, views, metadata)):
        raise DatasetError(path, "a VIA 3 project needs 'file', 'view' and 'metadata' objects")
    attributes = attributes if isinstance(attributes, dict) else {}
    aid = next((k for k, a in attributes.items() if isinstance(a, dict) and a.get("aname") == class_attribute), None)
    source, by_view = Source([]), {}
    for vid, view in views.items():
        fids = view.get("fid_list") if isinstance(view, dict) else None
        file = files.get(str(fids[0])) if fids else None
        if not isinstance(file, dict) or not file.get("fname"):
            raise DatasetError(path, "a view needs a 'fid_list' of a file with a 'fname'", f"view {vid!r}")
        if file.get("type", 2) != 2:  # video or audio
            continue
        fname = str(file["fname"])
        by_view[str(vid)] = SourceImage(
            root / (fname.rsplit("/", 1)[-1] if "://" in fname else fname), f"{path.name}: {fname}"
        )
        source.images.append(by_view[str(vid)])
    for mid, meta in metadata.items():
        image = by_view.get(str(meta.get("vid"))) if isinstance(meta, dict) else None
        if image is None or not meta.get("xy") or meta.get("z"):  # file attributes, temporal segments, other files
            continue
        record = f"{image.record} region {mid}"
        try:
            shape = shape_3x(meta["xy"], record)
        except Drop as drop:
            source.issues.append((drop.rule, record, drop.detail))
            continue
        _add_region(
            source,
            image,
            shape,
            _class_3x(meta.get("av"), attributes.get(aid), aid, default_class),
            record,
            class_attribute,
        )
    return source
