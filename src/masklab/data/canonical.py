"""Any :class:`~masklab.data.formats.Source` -> the canonical dataset: COCO JSON (RLE) + an image folder.

``<out>/images/<file>``, ``<out>/annotations/{train,val,test}.json`` (categories 1..K, image and
annotation ids from 1, ``bbox`` = tight box of the mask, ``area`` = mask pixels), ``<out>/report.json``
and ``<out>/report.md``. The output is built in a sibling temporary folder and moved into place
only when complete: a failed run leaves the previous output as it was.

Images are written in the frame their annotations were drawn in (:class:`Frame`): a photo with an
EXIF orientation is turned upright (without the tag) and masks made at a size the source declares
are scaled to the image, so every reader after this sees masks on their objects.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from masklab.data.formats import DatasetError, Drop, Source, SourceImage, SourceInstance
from masklab.data.rle import as_pycoco, encode
from masklab.data.rle import decode as decode_rle
from masklab.data.validate import Report

SPLITS = ("train", "val", "test")


def _embedded(image: SourceImage):
    """The image's bytes the source embeds (labelme's imageData), when its file is missing; else None."""
    return image.data if image.data is not None and not image.path.is_file() else None


EXIF_ORIENTATION = 0x0112
#: EXIF orientation -> the turn that shows the stored pixels upright (what ``ImageOps.exif_transpose`` applies)
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SWAPS_SIDES = (5, 6, 7, 8)


@dataclass(frozen=True)
class Frame:
    """Where an image's annotations live and how its pixels are written.

    ``hw``: the written image's (h, w), the frame the masks are made in; ``declared``: the (h, w) the
    annotation's coordinates refer to (the source's declared size; ``hw`` when it declares none);
    ``stored``: the (h, w) of the file's pixels; ``orientation``: the file's EXIF orientation (1: none);
    ``turn``: the orientation applied when writing (1: pixels kept as stored).
    """

    hw: tuple[int, int]
    declared: tuple[int, int]
    stored: tuple[int, int]
    orientation: int = 1
    turn: int = 1


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block: the pixels as stored
        return 1
    return value if value in UPRIGHT else 1


def _open_image(image: SourceImage, embedded, report: Report, upright: bool = True) -> Frame | None:
    """The image's :class:`Frame`, read from its file or from ``embedded`` (see :func:`_embedded`); None, reported,
    if neither can be read or its size contradicts the annotation's."""
    if embedded is None and not image.path.is_file():
        return report.add("image_missing", image.record, f"{image.record}: {image.path} not found")
    what = f"{image.path.name} (embedded in the annotation, the file is missing)" if embedded else image.path.name
    try:
        with Image.open(io.BytesIO(embedded()) if embedded else image.path) as im:
            im.load()
            stored, orientation = (im.height, im.width), _orientation(im)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        why = (
            "its bytes are no image" if embedded and isinstance(exc, UnidentifiedImageError) else exc
        )  # not PIL's BytesIO
        return report.add("image_unreadable", image.record, f"{image.record}: {what} unreadable ({why})")
    if embedded:
        report.add(
            "image_embedded", image.record, f"{image.record}: {image.path} not found; the image embedded in it is used"
        )
    return _frame(image, stored, orientation, report, upright)


def _frame(image: SourceImage, stored, orientation: int, report: Report, upright: bool = True) -> Frame | None:
    """Annotation tools (labelme, browsers for VIA, CVAT) and detectron2 show a photo upright by its EXIF
    orientation, so its annotations are taken as drawn on the upright image, unless the source declares the
    stored size where upright would swap the sides (then they were drawn on the pixels as stored), or
    ``upright`` is False (data.prepare.exif_orientation=stored)."""
    shown = stored[::-1] if orientation in SWAPS_SIDES else stored
    turn, (sh, sw), (uh, uw), say = orientation, stored, shown, f"{image.record}: EXIF orientation {orientation}"
    if orientation != 1 and not upright:
        turn = 1
        report.add(
            "exif_orientation", image.record, f"{say}: pixels kept as stored (data.prepare.exif_orientation=stored)"
        )
    elif orientation != 1 and image.size == stored != shown:
        turn = 1
        report.add(
            "exif_orientation",
            image.record,
            f"{say}, but the annotation declares the stored size {sw}x{sh}: pixels kept as stored",
        )
    elif orientation != 1:
        report.add("exif_orientation", image.record, f"{say}: written upright ({uw}x{uh}), as annotation tools show it")
    hw = shown if turn != 1 else stored
    declared = image.size or hw
    if declared != hw:
        (dh, dw), (h, w) = declared, hw
        if not _same_aspect(declared, hw):
            return report.add(
                "image_size_mismatch",
                image.record,
                f"{image.record}: the annotation declares {dw}x{dh}, the image is {w}x{h} (another aspect ratio)",
            )
        report.add(
            "image_resized",
            image.record,
            f"{image.record}: the annotation declares {dw}x{dh}, the image is "
            f"{w}x{h}: its annotations are scaled by {w / dw:.4g}",
        )
    return Frame(hw, declared, stored, orientation, turn)


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether (h, w) ``a`` scaled to ``b``'s width or height is ``b`` to a pixel (the rounding of a resize)."""
    if not all(a) or not all(b):
        return a == b
    return abs(a[0] * b[1] / a[1] - b[0]) <= 1 or abs(a[1] * b[0] / a[0] - b[1]) <= 1


def _check_box(inst: SourceInstance, h: int, w: int, report: Report) -> bool:
    """False when the source box has zero area (drop); a box leaving the image is reported as clamped."""
    if inst.box is None:
        return True
    try:
        x1, y1, x2, y2 = (float(v) * s for v, s in zip(inst.box, (w, h, w, h) if inst.box_normalized else (1, 1, 1, 1)))
    except (TypeError, ValueError):
        x1 = y1 = x2 = y2 = float("nan")
    if not np.isfinite([x1, y1, x2, y2]).all():
        report.add(
            "box_not_finite",
            inst.record,
            f"{inst.record}: box {list(inst.box)} is not four finite numbers; rebuilt from the mask",
        )
        return True
    if x2 <= x1 or y2 <= y1:
        report.add("zero_area_box", inst.record, f"{inst.record}: box {inst.box} has zero area")
        return False
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        report.add(
            "box_outside_image",
            inst.record,
            f"{inst.record}: box {[round(v, 1) for v in (x1, y1, x2, y2)]} "
            f"leaves the {w}x{h} image; clamped (tight box of the mask)",
        )
    return True


def _instance(inst: SourceInstance, frame: Frame, report: Report) -> dict | None:
    (h, w), declared = frame.hw, frame.declared
    try:
        mask = inst.decode(*declared)
    except Drop as drop:
        return report.add(drop.rule, inst.record, drop.detail)
    for rule, detail in inst.notes:
        report.add(rule, inst.record, detail)
    if frame.turn in SWAPS_SIDES and _same_aspect(mask.shape, frame.stored) and not _same_aspect(mask.shape, (h, w)):
        mask = np.asarray(Image.fromarray(mask).transpose(UPRIGHT[frame.turn]))  # a mask of the pixels as stored
    if mask.shape != (h, w):
        if mask.shape != declared:  # else image_resized said it, once for the image
            report.add(
                "mask_size_mismatch",
                inst.record,
                f"{inst.record}: mask {mask.shape[1]}x{mask.shape[0]} resized to the {w}x{h} image",
            )
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    if not mask.any():
        return report.add("empty_mask", inst.record, f"{inst.record}: mask has zero area")
    if not _check_box(inst, *declared, report):
        return None
    rle = encode(mask)
    return {
        "name": inst.category,
        "rle": rle,
        "bbox": mask_utils.toBbox(as_pycoco(rle)).tolist(),
        "area": float(mask.sum()),
        "iscrowd": int(inst.iscrowd),
        "source_id": inst.source_id,
        "record": inst.record,
    }


def collect(source: Source, report: Report, progress: bool = True, upright: bool = True) -> list[dict]:
    """Open every image, decode and check every instance; the report gets each drop and fix.

    ``upright``: annotations of a photo with an EXIF orientation were drawn on it upright (see :func:`_frame`);
    False: on its pixels as stored.
    """
    for rule, record, detail in source.issues:
        report.add(rule, record, detail if detail.startswith(record) else f"{record}: {detail}")
    items = []
    for image in tqdm(source.images, desc="reading", unit="img", disable=not progress):
        embedded = _embedded(image)
        frame = _open_image(image, embedded, report, upright)
        if frame is None:
            continue
        anns = []
        for inst in image.instances:
            if source.categories is not None and inst.category not in source.categories:
                report.add("unknown_category", inst.record, f"{inst.record}: class {inst.category!r} not declared")
            elif (ann := _instance(inst, frame, report)) is not None:
                anns.append(ann)
        items.append(
            {
                "file": image.path,
                "data": embedded,
                "height": frame.hw[0],
                "width": frame.hw[1],
                "orientation": frame.orientation,
                "turn": frame.turn,
                "split": image.split,
                "anns": anns,
            }
        )
    _check_ids(items, report)
    return items


def _check_ids(items: list[dict], report: Report) -> None:
    """Ids are renumbered 1..N on writing; report the ones that needed it. Ids need only be unique within their
    source file: with data.source_splits each split is read from its own."""
    ids = [(it["split"], a) for it in items for a in it["anns"] if a["source_id"] is not None]
    seen = Counter((split, a["source_id"]) for split, a in ids)
    for split, a in ids:
        sid = a["source_id"]
        if not isinstance(sid, int) or isinstance(sid, bool) or sid <= 0:
            report.add("bad_annotation_id", a["record"], f"{a['record']}: id {sid!r} renumbered")
        elif seen[split, sid] > 1:
            report.add(
                "duplicate_annotation_id",
                a["record"],
                f"{a['record']}: id {sid} used {seen[split, sid]} times; renumbered",
            )


def select_classes(items: list[dict], report: Report, classes=None, min_instances: int = 0, declared=None) -> list[str]:
    """Keep the selected classes (by name) with at least ``min_instances``; return the kept names in order."""
    counts = Counter(a["name"] for it in items for a in it["anns"])
    order = list(declared) if declared else sorted(counts)
    order += [c for c in sorted(counts) if c not in order]
    if classes:
        unknown = [c for c in classes if c not in order]
        if unknown:
            raise DatasetError("data.prepare.classes", f"{unknown} not in the dataset; its classes are {order}")
        for c in order:
            if c not in classes and counts[c]:
                report.add(
                    "class_not_selected", f"class {c}", f"class {c!r}: {counts[c]} instances dropped (not selected)"
                )
        order = [c for c in order if c in classes]
    kept = []
    for c in order:
        if counts[c] < min_instances:
            report.add(
                "class_too_rare",
                f"class {c}",
                f"class {c!r}: {counts[c]} instances < min_instances {min_instances}; dropped",
            )
        else:
            kept.append(c)
    if not kept:
        raise DatasetError("data.prepare", f"no class left (counts {dict(counts)}, min_instances {min_instances})")
    label = {c: i + 1 for i, c in enumerate(kept)}
    for it in items:
        it["anns"] = [dict(a, label=label[a["name"]]) for a in it["anns"] if a["name"] in label]
    return kept


def split_items(items: list[dict], ratios: dict, seed: int) -> dict[str, list[dict]]:
    """Given splits when every image has one, else a seeded shuffle cut by ``ratios`` (train/val/test)."""
    if items and all(it["split"] for it in items):
        return {s: [it for it in items if it["split"] == s] for s in SPLITS if any(it["split"] == s for it in items)}
    total = sum(float(ratios.get(s, 0)) for s in SPLITS)
    if total <= 0:
        raise DatasetError("data.prepare.split", f"split ratios must add up to more than 0, got {dict(ratios)}")
    order = np.random.default_rng(seed).permutation(len(items))
    bounds = np.round(np.cumsum([float(ratios.get(s, 0)) / total for s in SPLITS]) * len(items)).astype(int)
    starts = np.concatenate([[0], bounds[:-1]])
    return {s: [items[i] for i in order[a:b]] for s, a, b in zip(SPLITS, starts, bounds) if b > a}


def _unique_names(items: list[dict]) -> None:
    used = set()
    for it in items:
        name, stem, k = it["file"].name, it["file"].stem, 1
        while name in used:
            name, k = f"{stem}_{k}{it['file'].suffix}", k + 1
        used.add(name)
        it["file_name"] = name


def _write_image(it: dict, dest: Path, max_size: int | None, report: Report | None = None) -> None:
    """Copy the image (or write the bytes the source embeds); re-encode it when it carries an EXIF orientation
    (turned upright or kept as stored, see :func:`_frame`, without the tag, so every reader sees the same pixels)
    or to shrink it (and its masks) so its longer side is ``max_size``.

    An instance whose mask vanishes in the shrink is dropped and reported (``vanished_on_resize``).
    """
    h, w = it["height"], it["width"]
    embedded = it["data"]() if it["data"] is not None else None
    shrink = bool(max_size) and max(h, w) > max_size
    if not shrink and it["orientation"] == 1:
        if embedded is not None:
            dest.write_bytes(embedded)
        else:
            shutil.copyfile(it["file"], dest)
        return
    s = max_size / max(h, w) if shrink else 1.0
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    with Image.open(io.BytesIO(embedded) if embedded is not None else it["file"]) as src:
        im = (src.transpose(UPRIGHT[it["turn"]]) if it["turn"] != 1 else src).convert("RGB")
        (im.resize((nw, nh), Image.BILINEAR) if shrink else im).save(dest, quality=95)
    if not shrink:
        return
    for a in it["anns"]:
        a["rle"] = encode(cv2.resize(decode_rle(a["rle"], h, w), (nw, nh), interpolation=cv2.INTER_NEAREST))
    kept = []
    for a in it["anns"]:
        if mask_utils.area(as_pycoco(a["rle"])) > 0:
            kept.append(a)
        elif report is not None:
            report.add(
                "vanished_on_resize",
                a["record"],
                f"{a['record']}: {a['area']:.0f} px mask empty after shrinking {w}x{h} to {nw}x{nh}",
            )
    it["anns"] = kept
    it["height"], it["width"] = nh, nw


def coco_json(items: list[dict], class_names: list[str]) -> dict:
    images, anns = [], []
    for it in items:
        images.append(
            {"id": len(images) + 1, "file_name": it["file_name"], "height": it["height"], "width": it["width"]}
        )
        for a in it["anns"]:
            bbox = mask_utils.toBbox(as_pycoco(a["rle"])).tolist()
            a.update(bbox=bbox, area=float(mask_utils.area(as_pycoco(a["rle"]))))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": len(images),
                    "category_id": a["label"],
                    "bbox": bbox,
                    "area": a["area"],
                    "iscrowd": a["iscrowd"],
                    "segmentation": a["rle"],
                }
            )
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": c, "supercategory": ""} for i, c in enumerate(class_names)],
    }


def digest(root) -> str | None:
    """A short sha256 of the annotation files at ``root`` (every image's name and size, every mask): the same on
    every copy of one prepared dataset, another after it is prepared again differently; None where none are (or
    ``root`` is None: generated data)."""
    files = sorted((Path(root) / "annotations").glob("*.json")) if root else []
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def write(
    out_dir: Path,
    splits: dict,
    class_names: list[str],
    make_report,
    max_size: int | None,
    progress: bool = True,
    report: Report | None = None,
) -> dict:
    """Write everything into a temporary sibling, then swap it in (the old output survives any failure).

    ``make_report(splits) -> (report dict, markdown)`` runs once the images are written (sizes final).
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "annotations").mkdir()
    try:
        every = [it for items in splits.values() for it in items]
        _unique_names(every)
        for it in tqdm(every, desc="writing", unit="img", disable=not progress):
            _write_image(it, tmp / "images" / it["file_name"], max_size, report)
        for split, items in splits.items():
            (tmp / "annotations" / f"{split}.json").write_text(json.dumps(coco_json(items, class_names)))
        report, text = make_report(splits)
        (tmp / "report.json").write_text(json.dumps(report, indent=1, default=str))
        (tmp / "report.md").write_text(text)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return report
