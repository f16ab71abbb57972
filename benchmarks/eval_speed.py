#!/usr/bin/env python
"""COCO evaluation speed: plain pycocotools vs masklab's path (faster-coco-eval), same inputs, one run.

Builds ``--images`` synthetic images of ground truth (shapes masks) and noisy predictions (shifted
masks, misses, wrong classes, false positives, random scores) in COCO form (RLE), then times the
evaluation - ground truth + results in, bbox and segm AP, AP50, AP75, APs/m/l and per-class AP out -
with plain ``pycocotools.COCOeval`` and with masklab's path (:class:`~masklab.metrics.coco.CocoEvaluator`
on faster-coco-eval), checks that every number matches to 1e-6 and prints the times and their ratio.
Encoding the predictions to RLE is the same work for both and is not timed.

    python benchmarks/eval_speed.py                  # 500 images, 256 px
Target: pycocotools time / masklab time >= 3.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="best of N for each backend")
    return p


if __name__ == "__main__":  # --help and a wrong argument answer before torch and Lightning are imported (5 s)
    arguments().parse_args()


import numpy as np  # noqa: E402
import torch  # noqa: E402

from masklab.data.shapes import ShapesDataset  # noqa: E402
from masklab.metrics.coco import CocoEvaluator  # noqa: E402


def noisy_predictions(target: dict, rng: np.random.Generator, size: int) -> dict:
    """Each GT instance predicted with a jittered mask (or missed), plus a few false positives."""
    masks, labels, scores = [], [], []
    for m, label in zip(target["masks"].numpy(), target["labels"].numpy()):
        if rng.random() < 0.1:
            continue
        dy, dx = rng.integers(-4, 5, size=2)
        moved = np.roll(np.roll(m, dy, 0), dx, 1)
        (
            masks.append(moved),
            labels.append(label if rng.random() > 0.1 else rng.integers(1, 5)),
            scores.append(rng.uniform(0.3, 1)),
        )
    for _ in range(rng.integers(0, 4)):
        fp = np.zeros((size, size), np.uint8)
        y, x, r = rng.integers(10, size - 30), rng.integers(10, size - 30), rng.integers(5, 20)
        fp[y : y + r, x : x + r] = 1
        masks.append(fp), labels.append(rng.integers(1, 5)), scores.append(rng.uniform(0, 0.6))
    m = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)) if masks else torch.zeros(0, 1, size, size)
    boxes = torch.tensor([_box(x[0].numpy()) for x in m], dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": boxes,
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores),
        "masks": m,
    }


def _box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 1, 1]


def build(images: int, size: int, seed: int = 0):
    data, rng = ShapesDataset(images, size, max_instances=6, seed=seed), np.random.default_rng(seed)
    targets = [data[i][1] for i in range(images)]
    return targets, [noisy_predictions(t, rng, size) for t in targets]


def timed(backend: str, encoded: CocoEvaluator, repeats: int):
    best, metrics = float("inf"), None
    for _ in range(repeats):
        ev = CocoEvaluator(encoded.class_names, backend=backend)
        ev.images, ev.gt, ev.dt = copy.deepcopy((encoded.images, encoded.gt, encoded.dt))  # fresh, untimed
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            metrics = ev.compute("val")
        best = min(best, time.perf_counter() - start)
    return best, metrics


def main(argv=None) -> dict:
    args = arguments().parse_args(argv)
    names = ["square", "circle", "triangle", "ellipse"]
    targets, preds = build(args.images, args.size)
    encoded = CocoEvaluator(names)
    encoded.update(targets, preds)
    t_ref, ref = timed("pycocotools", encoded, args.repeats)
    t_ours, ours = timed("faster", encoded, args.repeats)
    diff = max(abs(ref[k] - ours[k]) for k in ref if not (np.isnan(ref[k]) and np.isnan(ours[k])))
    same = diff <= 1e-6 and set(ref) == set(ours)
    print(
        f"{args.images} images, {sum(len(t['labels']) for t in targets)} GT, {sum(len(q['labels']) for q in preds)} "
        f"predictions, bbox + segm, per-class AP; this machine (best of {args.repeats}):\n"
        f"  pycocotools          {t_ref:7.2f} s\n  masklab (faster)     {t_ours:7.2f} s\n"
        f"  ratio                {t_ref / t_ours:7.2f}x  (target >= 3)\n"
        f"  numbers identical    {same}  (max |diff| {diff:.2e} over {len(ref)} metrics; "
        f"segm AP {ours['val/segm_AP']:.4f})"
    )
    if not same:
        sys.exit("the two backends disagree")
    return {"pycocotools_s": t_ref, "masklab_s": t_ours, "ratio": t_ref / t_ours, "max_diff": diff}


if __name__ == "__main__":
    main()
