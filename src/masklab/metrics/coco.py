"""COCO bbox/segm evaluation of torchvision-style predictions against contract targets.

One path for validation during training and for ``evaluate.py``. pycocotools does the scoring;
this module builds its inputs safely: ids from 1 (pycocotools silently scores annotation id 0 as
AP 0), ``area``/``iscrowd`` always set, non-finite boxes dropped, predictions for images that are
not in the ground truth refused, and "no predictions at all" scored 0.0 (NaN where there is nothing to
score, as COCO does) instead of crashing.
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import pycocotools.mask as mask_utils
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from masklab.data.rle import encode_masks

log = logging.getLogger(__name__)

#: names of COCOeval.stats[0:6], as metric suffixes
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: COCOeval's object-size ranges (mask or box area, px^2) of APs, APm, APl
AREA_RANGES = {"APs": (0, 32**2), "APm": (32**2, 96**2), "APl": (96**2, 1e10)}


class CocoEvaluator:
    """Accumulate (target, prediction) pairs, then :meth:`compute` COCO metrics for bbox and segm."""

    def __init__(self, class_names, mask_threshold: float = 0.5, backend: str = "faster", max_dets: int = 100):
        """``backend``: ``faster`` (faster-coco-eval's C++ COCOeval: the same numbers, several times
        faster, see benchmarks/eval_speed.py) or ``pycocotools`` (the reference). ``max_dets``: detections per
        image that AP counts (COCO's 100; more for images with more objects, as nms.box_detections_per_img)."""
        self.class_names = list(class_names)
        self.max_dets = max(100, int(max_dets))
        self.mask_threshold = mask_threshold
        if backend not in ("faster", "pycocotools"):
            raise ValueError(f"backend must be 'faster' or 'pycocotools', got {backend!r}")
        self.backend = backend
        self.reset()

    def reset(self) -> None:
        self.images, self.gt, self.dt = [], [], []
        self.last_eval = {}

    def add_targets(self, targets) -> None:
        for target in targets:
            self._add_target(target)

    def add_predictions(self, image_ids, predictions) -> None:
        for image_id, pred in zip(image_ids, predictions):
            self._add_prediction(int(image_id), pred)

    def update(self, targets, predictions) -> None:
        for target, pred in zip(targets, predictions):
            self._add_target(target)
            self._add_prediction(int(target["image_id"]), pred)

    def _add_target(self, t: dict) -> None:
        masks = t["masks"].cpu().numpy()
        h, w = masks.shape[1:] if masks.ndim == 3 else (0, 0)
        self.images.append({"id": int(t["image_id"]), "height": int(h), "width": int(w)})
        boxes = t["boxes"].cpu().numpy()
        crowd = t.get("iscrowd", torch.zeros(len(boxes), dtype=torch.int64)).cpu().numpy()
        for box, label, rle, c in zip(boxes, t["labels"].cpu().numpy(), encode_masks(masks), crowd):
            self.gt.append(
                {
                    "id": len(self.gt) + 1,
                    "image_id": int(t["image_id"]),
                    "category_id": int(label),
                    "bbox": _xywh(box),
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": int(c),
                }
            )

    def _add_prediction(self, image_id: int, p: dict) -> None:
        boxes = p["boxes"].detach().cpu().float().numpy()
        finite = np.isfinite(boxes).all(axis=1)
        if not finite.all():
            log.warning("image %d: dropped %d predictions with non-finite boxes", image_id, (~finite).sum())
        masks = (
            (p["masks"].detach().cpu().float().numpy()[:, 0] >= self.mask_threshold)
            if len(boxes)
            else np.zeros((0, 1, 1), bool)
        )
        scores, labels = p["scores"].detach().cpu().float().numpy(), p["labels"].detach().cpu().numpy()
        rles = encode_masks(masks[finite]) if finite.any() else []
        for box, s, label, rle in zip(boxes[finite], scores[finite], labels[finite], rles):
            self.dt.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": _xywh(box),
                    "score": float(s),
                    "segmentation": rle,
                }
            )

    def merge(self, parts: list[tuple[list, list, list]]) -> None:
        """Replace the state by the union of several evaluators' ``(images, gt, dt)`` (DDP ranks).

        An image already taken from an earlier part is left out: DistributedSampler pads the ranks to equal
        length by repeating images (3 val images on 2 ranks: one is scored twice), which doubled its
        objects and detections in the score."""
        self.reset()
        seen: set[int] = set()
        for images, gt, dt in parts:
            new = {im["id"] for im in images} - seen
            self.images += [im for im in images if im["id"] in new]
            kept = [a for a in gt if a["image_id"] in new]
            self.gt += [{**a, "id": len(self.gt) + i + 1} for i, a in enumerate(kept)]  # ids stay unique, from 1
            self.dt += [d for d in dt if d["image_id"] in new]
            seen |= new

    def run_cocoeval(self, iou_type: str):
        """The evaluated, accumulated and summarised COCOeval of the current state (``ev.eval``, ``ev.stats``)."""
        dataset = {
            "images": self.images,
            "annotations": self.gt,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)],
        }
        if self.backend == "faster":
            from faster_coco_eval import COCO as FasterCOCO
            from faster_coco_eval import COCOeval_faster

            gt = FasterCOCO(dataset)
            # one IoU worker: its thread pool only costs on few cores (2 cores: 0.16 s vs 0.23 s with 8)
            ev = COCOeval_faster(
                gt, gt.loadRes(list(self.dt)), iou_type, print_function=lambda *a, **k: None, rle_iou_max_workers=1
            )
        else:
            gt = COCO()
            gt.dataset = dataset
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress; we log results
                gt.createIndex()
                ev = COCOeval(gt, gt.loadRes(list(self.dt)), iou_type)
        ev.params.maxDets = [1, 10, self.max_dets]  # stats[0:6] are taken at the last
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate(), ev.accumulate(), ev.summarize()
        return ev

    def compute(self, prefix: str = "val", per_class: bool = True) -> dict[str, float]:
        """``{prefix}/{bbox,segm}_{AP,AP50,...}`` and ``{prefix}/segm_AP_<class>``; NaN where nothing to score."""
        metrics = {}
        for iou_type in ("bbox", "segm"):
            for k, v in self._evaluate(iou_type, per_class).items():
                metrics[f"{prefix}/{iou_type}_{k}"] = v
        return metrics

    def _evaluate(self, iou_type: str, per_class: bool) -> dict[str, float]:
        zeros = {k: 0.0 for k in STAT_NAMES}
        if per_class:
            zeros.update({f"AP_{n}": 0.0 for n in self.class_names})
        known = {im["id"] for im in self.images}
        unknown = [d for d in self.dt if d["image_id"] not in known]
        if unknown:  # pycocotools would assert; score what has ground truth and say what was left out
            log.warning(
                "%d predictions for images without ground truth were left out (image ids %s)",
                len(unknown),
                sorted({d["image_id"] for d in unknown})[:10],
            )
            self.dt = [d for d in self.dt if d["image_id"] in known]
        if not self.gt:  # an empty split: 0.0, which keeps the optimized metric a number for the checkpoint and sweeps
            return zeros
        if not self.dt:  # pycocotools cannot load no results; score them as COCO scores results that match nothing
            return self._undetected(per_class)
        ev = self.run_cocoeval(iou_type)
        self.last_eval[iou_type] = ev  # precision arrays for PR curves
        # COCO writes -1 where there is nothing to score (e.g. no large objects): report NaN, not 0
        out = {k: (float(v) if v >= 0 else float("nan")) for k, v in zip(STAT_NAMES, ev.stats[:6])}
        if per_class:
            # precision: [T iou, R recall, K class, A area, M maxdets]; area "all", maxdets 100
            prec = ev.eval["precision"][:, :, :, 0, -1]
            for k, name in enumerate(self.class_names):
                p = prec[:, :, k]
                out[f"AP_{name}"] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
        return out

    def _undetected(self, per_class: bool) -> dict[str, float]:
        """The metrics of no detections: 0.0 where there is an object to find, NaN where COCO has nothing to
        score (no object of that size or class; crowd regions are never counted), as with detections."""
        counted = [a for a in self.gt if not a["iscrowd"]]
        out = {k: 0.0 if counted else float("nan") for k in STAT_NAMES[:3]}
        for k, (lo, hi) in AREA_RANGES.items():  # COCOeval's areaRng, ends included
            out[k] = 0.0 if any(lo <= a["area"] <= hi for a in counted) else float("nan")
        if per_class:
            present = {a["category_id"] for a in counted}
            out.update({f"AP_{n}": 0.0 if i + 1 in present else float("nan") for i, n in enumerate(self.class_names)})
        return out


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]
