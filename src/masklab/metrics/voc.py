"""VOC-style mAP@0.5 the way the seeds computed it, and a confusion matrix with precision/recall.

``voc_map50``: Matterport Mask R-CNN's ``compute_ap`` per image (mask IoU, greedy matching by score
to the highest-IoU unmatched ground truth *of the same class*, all-point interpolated AP), then
the mean over images that have ground truth. This is what the seeds reported as "mAP@0.5" (0.82 on
clothing); it is not COCO's AP50 (which pools all images per class, then averages classes), so
both are reported side by side.

``confusion``: at one confidence and IoU 0.5, each prediction (by descending score) takes the
unmatched ground truth it overlaps most (any class); counts go to ``[true class, predicted class]``;
unmatched predictions to the background row, missed ground truth to the background column.
Inputs are the evaluator's COCO-form records (RLE masks), so the numbers come from the same state
as the COCO metrics.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pycocotools.mask as mask_utils

from masklab.data.rle import as_pycoco


def by_image(images: list[dict], gt: list[dict], dt: list[dict]):
    """{image_id: (gt records, dt records sorted by descending score)} for every evaluated image."""
    g, d = defaultdict(list), defaultdict(list)
    for a in gt:
        g[a["image_id"]].append(a)
    for a in dt:
        d[a["image_id"]].append(a)
    return {im["id"]: (g[im["id"]], sorted(d[im["id"]], key=lambda a: -a["score"])) for im in images}


def mask_ious(dts: list[dict], gts: list[dict]) -> np.ndarray:
    """P×G mask IoU (crowd flags ignored: plain IoU, as Matterport)."""
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    return np.asarray(
        mask_utils.iou(
            [as_pycoco(a["segmentation"]) for a in dts], [as_pycoco(a["segmentation"]) for a in gts], [0] * len(gts)
        )
    )


def matterport_ap(gt_labels, dt_labels, ious: np.ndarray, iou_threshold: float = 0.5) -> float:
    """Matterport's ``compute_matches`` + ``compute_ap`` for one image (predictions sorted by score)."""
    gt_match, pred_match = np.full(len(gt_labels), -1), np.full(len(dt_labels), -1)
    for i in range(len(dt_labels)):
        for j in np.argsort(-ious[i], kind="stable") if len(gt_labels) else []:
            if gt_match[j] > -1:
                continue
            if ious[i, j] < iou_threshold:
                break
            if dt_labels[i] == gt_labels[j]:
                gt_match[j], pred_match[i] = i, j
                break
    hits = np.cumsum(pred_match > -1)
    precisions = np.concatenate([[0], hits / (np.arange(len(pred_match)) + 1), [0]])
    recalls = np.concatenate([[0], hits / max(len(gt_match), 1), [1]])
    for i in range(len(precisions) - 2, -1, -1):
        precisions[i] = max(precisions[i], precisions[i + 1])
    idx = np.where(recalls[:-1] != recalls[1:])[0] + 1
    return float(np.sum((recalls[idx] - recalls[idx - 1]) * precisions[idx]))


def voc_map50(images, gt, dt, iou_threshold: float = 0.5) -> float:
    """Mean over images with ground truth of the per-image Matterport AP (NaN if no image has any)."""
    aps = []
    for gts, dts in by_image(images, gt, dt).values():
        gts = [a for a in gts if not a.get("iscrowd", 0)]
        if gts:
            aps.append(
                matterport_ap(
                    [a["category_id"] for a in gts], [a["category_id"] for a in dts], mask_ious(dts, gts), iou_threshold
                )
            )
    return float(np.mean(aps)) if aps else float("nan")


def confusion(images, gt, dt, num_classes: int, score_threshold: float, iou_threshold: float = 0.5) -> np.ndarray:
    """(K+1)×(K+1) counts: rows true class, columns predicted class; index 0 is background."""
    m = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for gts, dts in by_image(images, gt, dt).values():
        gts = [a for a in gts if not a.get("iscrowd", 0)]
        dts = [a for a in dts if a["score"] >= score_threshold]
        ious, taken = mask_ious(dts, gts), np.zeros(len(gts), bool)
        for i, d in enumerate(dts):
            cand = np.where(~taken & (ious[i] >= iou_threshold))[0] if len(gts) else []
            if len(cand):
                j = cand[np.argmax(ious[i, cand])]
                taken[j] = True
                m[gts[j]["category_id"], d["category_id"]] += 1
            else:
                m[0, d["category_id"]] += 1
        for j in np.where(~taken)[0]:
            m[gts[j]["category_id"], 0] += 1
    return m


def precision_recall(m: np.ndarray, class_names) -> dict[str, float]:
    """Per-class and overall precision/recall from a confusion matrix (NaN where undefined)."""
    tp = np.diag(m)[1:].astype(float)
    predicted, actual = m[:, 1:].sum(0).astype(float), m[1:, :].sum(1).astype(float)
    out = {
        "precision": tp.sum() / predicted.sum() if predicted.sum() else float("nan"),
        "recall": tp.sum() / actual.sum() if actual.sum() else float("nan"),
    }
    p, r = out["precision"], out["recall"]
    out["f1"] = 2 * p * r / (p + r) if p + r > 0 else float("nan")
    for k, name in enumerate(class_names):
        out[f"precision_{name}"] = tp[k] / predicted[k] if predicted[k] else float("nan")
        out[f"recall_{name}"] = tp[k] / actual[k] if actual[k] else float("nan")
    return {k: float(v) for k, v in out.items()}
