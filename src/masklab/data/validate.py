"""Validation rules of the dataset conversion and the report ``prepare.py`` writes.

Every rule has one documented outcome: *fixed* (the record is kept, corrected, with a warning) or
*dropped* (the record is left out, with the reason). A file that cannot be used at all (not JSON,
wrong shape, missing columns) is not a rule: it raises :class:`~masklab.data.formats.DatasetError`.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("masklab.prepare")

#: rule -> (outcome, what happens); the README's table and the report are generated from this
RULES = {
    "image_missing": ("dropped", "image file not found: the image and its annotations are left out"),
    "image_unreadable": ("dropped", "image (or mask PNG) cannot be decoded: left out"),
    "image_embedded": (
        "fixed",
        "image file not found: the image embedded in the annotation file (labelme's imageData) is used",
    ),
    "exif_orientation": (
        "fixed",
        "photo with an EXIF orientation: written upright, as annotation tools show it (kept as "
        "stored when the annotation declares the stored size and upright would swap the "
        "sides); masks of the stored pixels (their aspect ratio) are turned with it",
    ),
    "image_resized": (
        "fixed",
        "the image's size differs from the one the annotation declares, with the same aspect "
        "ratio: the annotations are scaled to the image",
    ),
    "image_size_mismatch": (
        "dropped",
        "the image's size differs from the one the annotation declares, with another "
        "aspect ratio (another image?): left out",
    ),
    "mask_missing": ("dropped", "no mask file for the image: the image is left out"),
    "polygon_too_few_points": (
        "dropped",
        "polygon with < 3 points (or a coordinate that is no finite number): that "
        "polygon is skipped; the annotation is dropped when none is left",
    ),
    "empty_mask": ("dropped", "mask with zero area (or no segmentation): the annotation is dropped"),
    "zero_area_box": ("dropped", "the source box has zero width or height: the annotation is dropped"),
    "box_not_finite": ("fixed", "the source box holds NaN, infinity or no number: the box is rebuilt from the mask"),
    "box_outside_image": (
        "fixed",
        "the source box leaves the image: boxes are the tight box of the mask, which is clamped to the image",
    ),
    "polygon_outside_image": (
        "fixed",
        "polygon points more than a pixel outside the image (negative or past its size): "
        "the mask is clipped to the image",
    ),
    "image_id_type": ("fixed", 'annotation\'s image_id given as a string of an integer image id ("1" for 1): matched'),
    "bad_annotation_id": (
        "fixed",
        "annotation id <= 0 or not an integer: renumbered (pycocotools scores id 0 as AP 0)",
    ),
    "duplicate_annotation_id": ("fixed", "annotation id used twice: renumbered"),
    "unknown_category": ("dropped", "category not declared by the source (or no class attribute): dropped"),
    "background_category": (
        "dropped",
        "annotation of a background category or ignore label (labelme's _background_, __ignore__): dropped",
    ),
    "category_merged": ("fixed", "several categories of a COCO file share a name: their instances are one class"),
    "unknown_image": ("dropped", "annotation for an image the source does not list: dropped"),
    "mask_size_mismatch": ("fixed", "mask size differs from the image: resized to the image (nearest neighbour)"),
    "rle_out_of_bounds": ("dropped", "RLE runs past the image, negative, unordered or undecodable: dropped"),
    "bad_shape": (
        "dropped",
        "VIA region or labelme shape of an unsupported kind (a line, a point), missing "
        "coordinates or an unreadable mask bitmap: dropped",
    ),
    "class_not_selected": ("dropped", "class not in data.prepare.classes: its instances are dropped"),
    "vanished_on_resize": (
        "dropped",
        "instance thinner than a pixel once data.prepare.max_image_size shrank the image: dropped",
    ),
    "class_too_rare": (
        "dropped",
        "class with fewer than data.prepare.min_instances instances: its instances are dropped",
    ),
}


@dataclass
class Report:
    entries: list[dict] = field(default_factory=list)

    def add(self, rule: str, record: str, detail: str) -> None:
        outcome = RULES[rule][0]
        self.entries.append({"rule": rule, "outcome": outcome, "record": record, "detail": detail})
        log.debug("%s %s: %s", outcome, rule, detail)

    def counts(self) -> dict[str, int]:
        return dict(Counter(e["rule"] for e in self.entries))


def training_scale(h: int, w: int, min_size: int, max_size: int) -> float:
    """The factor torchvision's GeneralizedRCNNTransform resizes an h×w image by."""
    return min(min_size / min(h, w), max_size / max(h, w))


def anchor_stats(sizes_px: np.ndarray, anchor_sizes) -> dict:
    """How instance sizes (sqrt of box area, px at training scale) fall on the anchor sizes.

    Each instance is assigned to the anchor size nearest in log scale (as the FPN level mapping does);
    "below"/"above" count instances less than half the smallest / more than twice the largest anchor.
    """
    anchors = np.asarray(list(anchor_sizes), float)
    if len(sizes_px) == 0:
        return {"anchors": anchors.tolist(), "per_anchor": [0] * len(anchors), "below": 0, "above": 0}
    nearest = np.abs(np.log(sizes_px[:, None]) - np.log(anchors[None])).argmin(1)
    return {
        "anchors": anchors.tolist(),
        "per_anchor": np.bincount(nearest, minlength=len(anchors)).tolist(),
        "below": int((sizes_px < anchors.min() / 2).sum()),
        "above": int((sizes_px > anchors.max() * 2).sum()),
    }


def percentiles(values) -> dict:
    v = np.asarray(values, float)
    if v.size == 0:
        return {}
    q = np.percentile(v, [0, 5, 50, 95, 100])
    return dict(zip(("min", "p5", "median", "p95", "max"), np.round(q, 1).tolist()))


def split_tables(splits: dict, class_names) -> dict:
    """{split: {"images": n, "empty_images": n, "instances": {class: n}}} of the written splits."""
    out = {}
    for split, items in splits.items():
        per_class = Counter(class_names[a["label"] - 1] for it in items for a in it["anns"])
        out[split] = {
            "images": len(items),
            "empty_images": sum(1 for it in items if not it["anns"]),
            "instances": {c: per_class.get(c, 0) for c in class_names},
        }
    return out


def size_stats(splits: dict, min_size: int, max_size: int, anchor_sizes) -> dict:
    """Mask area and box size (sqrt area) at the training scale, against the anchors."""
    areas, boxes = [], []
    for items in splits.values():
        for it in items:
            s = training_scale(it["height"], it["width"], min_size, max_size)
            for a in it["anns"]:
                areas.append(a["area"] * s * s)
                boxes.append(np.sqrt(max(a["bbox"][2] * a["bbox"][3], 1e-6)) * s)
    return {
        "training_size": [min_size, max_size],
        "mask_area_px": percentiles(areas),
        "box_size_px": percentiles(boxes),
        "anchor_fit": anchor_stats(np.asarray(boxes, float), anchor_sizes),
    }


def markdown(report: dict) -> str:
    """The readable table of a report dict (what ``report.md`` holds and ``prepare.py`` prints)."""
    names = report["class_names"]
    lines = [
        f"# Dataset report: {report['name']}",
        "",
        f"source: `{report['source']}`",
        "",
        "| split | images | empty | " + " | ".join(names) + " | total |",
        "|---|---:|---:|" + "---:|" * (len(names) + 1),
    ]
    for split, t in report["splits"].items():
        inst = [t["instances"][c] for c in names]
        lines.append(
            f"| {split} | {t['images']} | {t['empty_images']} | " + " | ".join(map(str, inst)) + f" | {sum(inst)} |"
        )
    st = report["sizes"]
    fit = st["anchor_fit"]
    lines += [
        "",
        f"## Sizes at the training scale ({st['training_size'][0]}–{st['training_size'][1]} px)",
        "",
        f"- mask area px: {st['mask_area_px']}",
        f"- box size (sqrt area) px: {st['box_size_px']}",
        "",
        "| anchor | " + " | ".join(str(int(a)) for a in fit["anchors"]) + " | < half smallest | > twice largest |",
        "|---|" + "---:|" * (len(fit["anchors"]) + 2),
        "| instances | " + " | ".join(map(str, fit["per_anchor"])) + f" | {fit['below']} | {fit['above']} |",
        "",
    ]
    lines += _fit_lines(report)
    lines += _issue_lines(report["issues"])
    return "\n".join(lines) + "\n"


def _fit_lines(report: dict) -> list[str]:
    """The auto settings a training run would take, and sentences for what does not fit (``fit_report``)."""
    if "advice" not in report:  # a report of an older masklab
        return []
    lines = ["## What does not fit", ""] + (
        [f"- {a}" for a in report["advice"]] or ["nothing: the settings below fit the data"]
    )
    fit = report.get("fit", {})
    if "anchor_recall" in fit:
        groups = ", ".join(f"{g} {r:.2f}" for g, r in fit.get("anchor_recall_groups", {}).items())
        lines += [
            "",
            f"Anchor recall (share of train boxes whose best anchor has IoU >= {fit['anchor_iou']}): "
            f"{fit['anchor_recall']:.3f} with anchors {fit['anchor_sizes']}; "
            f"anchors=auto {fit['anchor_recall_auto']:.3f}; "
            f"the fixed groups {groups}. Instances per image: up to {fit.get('max_instances_per_image')}.",
        ]
    if report.get("auto"):
        lines += ["", "## Settings derived from the data (auto; a plain value on the command line overrides one)", ""]
        lines += [f"- `{k}={'null' if v is None else v}`: {why}" for k, (v, why) in report["auto"].items()]
    return lines + [""]


def _issue_lines(issues: list[dict], per_rule: int = 20) -> list[str]:
    if not issues:
        return ["## Dropped / fixed", "", "nothing: every record was used as written"]
    lines = ["## Dropped / fixed", "", "| rule | outcome | count | what happens |", "|---|---|---:|---|"]
    by_rule = defaultdict(list)
    for e in issues:
        by_rule[e["rule"]].append(e)
    for rule, es in by_rule.items():
        lines.append(f"| {rule} | {es[0]['outcome']} | {len(es)} | {RULES[rule][1]} |")
    for rule, es in by_rule.items():
        lines += ["", f"### {rule}", ""] + [f"- {e['detail']}" for e in es[:per_rule]]
        if len(es) > per_rule:
            lines.append(f"- … {len(es) - per_rule} more in report.json")
    return lines
