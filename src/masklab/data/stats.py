"""Dataset statistics, computed once by ``prepare.py`` and stored in ``report.json`` (key ``stats``).

Per split, at native resolution: image sizes, instances per image, box size (sqrt of box area, px) and
aspect ratio (h / w, as torchvision's anchors define it), and a sample of boxes ``[w, h, image_h, image_w]``
that the ``auto`` settings (:mod:`masklab.data.auto`) fit anchors and the training scale to.
Training reads them from the report; nothing recomputes them per run.
"""

from __future__ import annotations

import numpy as np

#: boxes kept per split for fitting (a seeded sample of larger splits); enough for percentiles to ~0.5 %
MAX_BOXES = 20000
QUANTILES = {"min": 0, "p2": 2, "p10": 10, "median": 50, "p90": 90, "p95": 95, "max": 100}


def quantiles(values, digits: int = 1) -> dict:
    """{min, p2, p10, median, p90, p95, max} of ``values`` rounded to ``digits`` ({} when empty)."""
    v = np.asarray(values, float)
    if v.size == 0:
        return {}
    return {k: round(float(x), digits) for k, x in zip(QUANTILES, np.percentile(v, list(QUANTILES.values())))}


def split_stats(items: list[dict], class_names=(), seed: int = 0) -> dict:
    """Statistics of one split's written items (``height``, ``width``, ``anns`` with COCO ``bbox`` xywh and
    1-based ``label``)."""
    counts = [len(it["anns"]) for it in items]
    per_class = np.bincount([a["label"] for it in items for a in it["anns"]], minlength=len(class_names) + 1)
    boxes = np.array(
        [
            [a["bbox"][2], a["bbox"][3], it["height"], it["width"]]
            for it in items
            for a in it["anns"]
            if not a.get("iscrowd")
        ],
        float,
    ).reshape(-1, 4)
    boxes = boxes[(boxes[:, 0] > 0) & (boxes[:, 1] > 0)]
    if len(boxes) > MAX_BOXES:
        boxes = boxes[np.sort(np.random.default_rng(seed).choice(len(boxes), MAX_BOXES, replace=False))]
    return {
        "images": len(items),
        "image_height": quantiles([it["height"] for it in items]),
        "image_width": quantiles([it["width"] for it in items]),
        "image_long_side": quantiles([max(it["height"], it["width"]) for it in items]),
        "instances_per_image": {
            **quantiles(counts),
            "mean": round(float(np.mean(counts)), 2) if counts else 0.0,
            "total": int(sum(counts)),
        },
        "instance_counts": counts,
        "instances_per_class": {c: int(n) for c, n in zip(class_names, per_class[1:])},
        "box_size": quantiles(np.sqrt(boxes[:, 0] * boxes[:, 1])),
        "aspect_ratio": quantiles(boxes[:, 1] / boxes[:, 0], digits=3),
        "boxes": np.round(boxes, 1).tolist(),
    }


def dataset_stats(splits: dict[str, list[dict]], class_names=()) -> dict:
    """{split: :func:`split_stats`} of every written split."""
    return {split: split_stats(items, class_names) for split, items in splits.items()}


def boxes_of(stats: dict, split: str = "train") -> np.ndarray:
    """The stored box sample of ``split`` as an N×4 array ``[w, h, image_h, image_w]`` (native px)."""
    return np.asarray(stats.get(split, {}).get("boxes", []), float).reshape(-1, 4)
