"""VOC mAP@0.5 (Matterport's way), confusion matrix, precision and recall on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from masklab.data.rle import encode_masks
from masklab.data.shapes import ShapesDataset
from masklab.metrics import voc
from masklab.metrics.coco import CocoEvaluator


def square(y, x, s=10, size=64):
    m = np.zeros((size, size), np.uint8)
    m[y : y + s, x : x + s] = 1
    return m


def record(image_id, mask, label, score=None):
    (rle,) = encode_masks(mask[None])
    r = {"image_id": image_id, "category_id": label, "segmentation": rle, "iscrowd": 0}
    return r if score is None else {**r, "score": score}


def case():
    """Image 1: gt A, B (class 1), C (class 1). Predictions: A 0.9 class 1 (hit), nothing 0.8 (FP),
    B 0.7 class 1 (hit), C 0.95 class 2 (wrong class). Image 2: one gt, no prediction. Image 3: no gt."""
    A, B, C, E = square(0, 0), square(20, 20), square(40, 40), square(50, 0)
    images = [{"id": i} for i in (1, 2, 3)]
    gt = [record(1, A, 1), record(1, B, 1), record(1, C, 1), record(2, A, 1)]
    dt = [record(1, A, 1, 0.9), record(1, E, 1, 0.8), record(1, B, 1, 0.7), record(1, C, 2, 0.95), record(3, A, 1, 0.5)]
    return images, gt, dt


def test_matterport_ap_by_hand():
    # image 1 by score: C(wrong class) .95 -> miss, A .9 hit, E .8 miss, B .7 hit; 3 gt
    # precisions 0, 1/2, 1/3, 2/4; recalls 0, 1/3, 1/3, 2/3 -> monotone p: 1/2 up to r=2/3 -> AP = 2/3 * 1/2 = 1/3
    images, gt, dt = case()
    ious = voc.mask_ious(sorted([d for d in dt if d["image_id"] == 1], key=lambda d: -d["score"]), gt[:3])
    assert voc.matterport_ap([1, 1, 1], [2, 1, 1, 1], ious) == pytest.approx(1 / 3)
    # mean over images with gt: image 1 (1/3) and image 2 (0: nothing predicted); image 3 has no gt
    assert voc.voc_map50(images, gt, dt) == pytest.approx((1 / 3 + 0) / 2)


def test_confusion_precision_recall_by_hand():
    images, gt, dt = case()
    m = voc.confusion(images, gt, dt, num_classes=2, score_threshold=0.75)  # B (0.7) and image 3's 0.5 are below
    assert m.tolist() == [
        [0, 1, 0],  # background row: E predicted as class 1 (a false positive)
        [2, 1, 1],  # class 1: B and image 2's gt missed, A hit, C predicted as class 2
        [0, 0, 0],
    ]
    pr = voc.precision_recall(m, ["one", "two"])
    assert pr["precision"] == pytest.approx(1 / 3) and pr["recall"] == pytest.approx(1 / 4)
    assert pr["precision_one"] == pytest.approx(1 / 2) and pr["recall_one"] == pytest.approx(1 / 4)
    assert pr["precision_two"] == 0.0 and math.isnan(pr["recall_two"])
    assert pr["f1"] == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))


def test_perfect_predictions_give_one_everywhere():
    ev = CocoEvaluator(ShapesDataset.class_names)
    ds = ShapesDataset(6, 96, max_instances=4, seed=2)
    for i in range(len(ds)):
        t = ds[i][1]
        ev.update(
            [t],
            [
                {
                    "boxes": t["boxes"],
                    "labels": t["labels"],
                    "scores": torch.ones(len(t["labels"])),
                    "masks": t["masks"][:, None].float(),
                }
            ],
        )
    assert voc.voc_map50(ev.images, ev.gt, ev.dt) == 1.0
    m = voc.confusion(ev.images, ev.gt, ev.dt, 4, 0.5)
    assert m[0].sum() == 0 and m[:, 0].sum() == 0 and np.trace(m) == len(ev.gt)
    pr = voc.precision_recall(m, ShapesDataset.class_names)
    assert pr["precision"] == pr["recall"] == pr["f1"] == 1.0
