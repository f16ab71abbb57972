"""One network pass over a split, then every metric from the same state, and inference-only re-tuning."""

from __future__ import annotations

import itertools
import math

import torch
from tqdm import tqdm

from masklab import MasklabError
from masklab.metrics import registry
from masklab.metrics.coco import CocoEvaluator
from masklab.model.inference import postprocess, raw_predictions


@torch.no_grad()
def run_network(model, loader, score_floor: float, device: str = "cpu", progress: bool = True):
    """(ground-truth evaluator state, {image_id: raw detections}) for every image of ``loader``."""
    gt, raw = CocoEvaluator([]), {}
    model.to(device).eval()
    for images, targets in tqdm(loader, desc="network", unit="batch", disable=not progress):
        outs = raw_predictions(model, [im.to(device) for im in images], score_floor)
        gt.add_targets(targets)
        for t, r in zip(targets, outs):
            raw[int(t["image_id"])] = r
    return gt, raw


def evaluate_setting(
    gt: CocoEvaluator,
    raw: dict,
    class_names,
    score_thresh: float,
    nms_thresh: float,
    max_dets: int,
    prefix: str,
    min_score: float = 0.0,
) -> tuple[dict, CocoEvaluator, dict]:
    """Metrics ``{prefix}/...`` of every evaluator (:mod:`masklab.metrics.registry`) at one post-processing setting.

    AP and mAP rank every detection the setting keeps; precision, recall, F1 and the confusion matrix count a
    detection only when it also scores at least ``min_score`` (an operating point, as predict.py's drawings):
    at a detection min confidence of 0.05, what AP wants, they mostly counted the weak duplicates AP ignores."""
    ev = CocoEvaluator(class_names, max_dets=max_dets)
    ev.images, ev.gt = gt.images, gt.gt
    preds = {i: postprocess(r, score_thresh, nms_thresh, max_dets) for i, r in raw.items()}
    ev.add_predictions(list(preds), list(preds.values()))
    metrics, extra = registry.compute(ev, list(registry.EVALUATORS), class_names, prefix, max(score_thresh, min_score))
    return metrics, ev, {**extra, "predictions": preds}


def retune(gt: CocoEvaluator, raw: dict, class_names, grid: dict, score_floor: float, prefix: str) -> list[dict]:
    """Every combination of ``grid`` (score_thresh, nms_thresh, max_dets lists) on the cached raw detections."""
    too_low = [s for s in grid["score_thresh"] if s < score_floor]
    if too_low:
        raise MasklabError(f"retune.score_thresh {too_low} below the cached floor {score_floor}: lower score_floor")
    rows = []
    combos = list(itertools.product(grid["score_thresh"], grid["nms_thresh"], grid["max_dets"]))
    for s, n, m in tqdm(combos, desc="re-tuning", unit="setting"):
        metrics, _, _ = evaluate_setting(gt, raw, class_names, s, n, m, prefix)
        rows.append({"score_thresh": s, "nms_thresh": n, "max_dets": m, **_overall(metrics)})
    return rows


def _overall(metrics: dict) -> dict:
    """Every metric but the per-class ones, prefix dropped (a row of the re-tuning table)."""
    return {k.split("/", 1)[1]: v for k, v in metrics.items() if not registry.per_class(k)}


def best_settings(rows: list[dict], metrics=None):
    """{metric: the row that maximises it} (NaN rows ignored); default every evaluator's overall metrics."""
    best = {}
    for m in metrics or registry.headline():
        scored = [r for r in rows if m in r and not math.isnan(r[m])]
        if scored:
            best[m] = max(scored, key=lambda r: r[m])
    return best
