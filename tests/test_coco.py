"""The COCO wrapper: perfect -> 1.0, nothing -> 0.0, and the same numbers as plain pycocotools."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from masklab.data.shapes import ShapesDataset
from masklab.metrics.coco import CocoEvaluator

NAMES = ShapesDataset.class_names


def perfect(target):
    n = len(target["labels"])
    return {
        "boxes": target["boxes"].clone(),
        "labels": target["labels"].clone(),
        "scores": torch.ones(n),
        "masks": target["masks"][:, None].float(),
    }


def test_perfect_predictions_score_one_and_empty_predictions_zero():
    ds = ShapesDataset(12, 128, max_instances=4, seed=5)
    good, empty = CocoEvaluator(NAMES), CocoEvaluator(NAMES)
    for i in range(len(ds)):
        _, t = ds[i]
        good.update([t], [perfect(t)])
        empty.update(
            [t],
            [
                {
                    "boxes": torch.zeros(0, 4),
                    "labels": torch.zeros(0, dtype=torch.int64),
                    "scores": torch.zeros(0),
                    "masks": torch.zeros(0, 1, 128, 128),
                }
            ],
        )
    for name, value in good.compute().items():
        assert math.isnan(value) or value == pytest.approx(1.0), name  # NaN: no object of that size
    assert good.compute()["val/segm_AP"] == pytest.approx(1.0)
    got = empty.compute()
    # 0.0 where there is an object to find; NaN where there is none (the same places as for perfect predictions):
    # it was 0.0 everywhere, so a class or size the split does not have read as AP 0 in MLflow
    assert got.keys() == good.compute().keys() and any(math.isnan(v) for v in got.values())
    for name, value in good.compute().items():
        assert (math.isnan(got[name]) and math.isnan(value)) or got[name] == 0.0, name


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_no_detections_score_as_coco_scores_detections_that_match_nothing(backend):
    # pycocotools cannot load an empty result list, so no detections are scored without it: check against
    # COCOeval given one far-off false positive per class (AP 0 where there is ground truth, -1 where not)
    ds = ShapesDataset(3, 128, max_instances=2, seed=11)
    none, wrong = CocoEvaluator(NAMES, backend=backend), CocoEvaluator(NAMES, backend=backend)
    for i in range(len(ds)):
        _, t = ds[i]
        t["iscrowd"][:1] = 1  # a crowd region is never counted
        none.add_targets([t])
        wrong.add_targets([t])
    far = torch.zeros(1, 1, 128, 128)
    far[..., 0, 0] = 1.0
    wrong.add_predictions(
        [int(ds[0][1]["image_id"])] * len(NAMES),
        [
            {
                "boxes": torch.tensor([[0.0, 0.0, 1.0, 1.0]]),
                "labels": torch.tensor([k + 1]),
                "scores": torch.tensor([0.9]),
                "masks": far,
            }
            for k in range(len(NAMES))
        ],
    )
    a, b = none.compute(), wrong.compute()
    assert a.keys() == b.keys() and any(math.isnan(v) for v in a.values()) and 0.0 in a.values()
    assert all(a[k] == pytest.approx(b[k], nan_ok=True) for k in a), {k: (a[k], b[k]) for k in a}


def test_half_precision_predictions_are_scored_like_full_precision():
    # bf16 masks (a bf16-true model, or detections under autocast) raised "Got unsupported ScalarType BFloat16"
    ds = ShapesDataset(6, 64, max_instances=3, seed=4)
    full, half = CocoEvaluator(NAMES), CocoEvaluator(NAMES)
    for i in range(len(ds)):
        _, t = ds[i]
        p = perfect(t)
        full.update([t], [p])
        half.update([t], [{**p, "scores": p["scores"].bfloat16(), "masks": p["masks"].bfloat16()}])
    assert half.compute() == pytest.approx(full.compute(), nan_ok=True) and half.compute()[
        "val/segm_AP"
    ] == pytest.approx(1.0)


def test_validation_detections_are_full_precision_under_mixed_precision(tiny_cfg):
    # Lightning runs validation_step under autocast with 16-mixed/bf16-mixed: the detections the val AP is computed
    # from came out in bf16/fp16; they are now the model's fp32 output, the same as evaluate.py's
    from masklab.data.datamodule import build_datamodule
    from masklab.model.module import build_module

    cfg = tiny_cfg(["nms.box_score_thresh=0.0"])  # an untrained model: keep its low-score detections to compare
    dm = build_datamodule(cfg)
    dm.setup("fit")
    module = build_module(cfg, class_names=dm.class_names)
    images, targets = next(iter(dm.val_dataloader()))
    seen = []
    module.evaluator = type("Grab", (), {"update": lambda self, t, p: seen.append(p)})()
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.warns(UserWarning, match="self.log"):
        module._eval_step((images, targets), "val")
    with torch.no_grad():
        reference = module.model.eval()(list(images))
    assert sum(len(p["boxes"]) for p in seen[0]) > 0
    for got, ref in zip(seen[0], reference):
        for key in ("boxes", "scores", "labels", "masks"):
            assert got[key].dtype == ref[key].dtype and torch.equal(got[key], ref[key]), key


def test_non_finite_boxes_are_dropped_not_scored():
    _, t = ShapesDataset(1, 64, seed=2)[0]
    p = perfect(t)
    p["boxes"][0, 0] = float("nan")
    ev = CocoEvaluator(NAMES)
    ev.update([t], [p])
    assert len(ev.dt) == len(t["labels"]) - 1
    assert np.isfinite(ev.compute()["val/bbox_AP"])


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_numbers_equal_plain_pycocotools(backend):
    ds = ShapesDataset(20, 96, max_instances=4, seed=9)
    rng = np.random.default_rng(0)
    ev = CocoEvaluator(NAMES, backend=backend)
    images, anns, dets = [], [], []
    for i in range(len(ds)):
        _, t = ds[i]
        p = perfect(t)  # perturb: shifted boxes, eroded masks, random scores and a wrong label
        p["boxes"] = p["boxes"] + torch.from_numpy(rng.normal(0, 3, p["boxes"].shape)).float()
        p["masks"] = torch.roll(p["masks"], shifts=int(rng.integers(-3, 4)), dims=3)
        p["scores"] = torch.from_numpy(rng.uniform(0.1, 1, len(p["scores"]))).float()
        p["labels"][0] = 1 + (p["labels"][0] % 4)
        ev.update([t], [p])
        h, w = t["masks"].shape[1:]
        images.append({"id": t["image_id"], "height": h, "width": w})
        for box, label, m in zip(t["boxes"].tolist(), t["labels"].tolist(), t["masks"].numpy()):
            rle = mask_utils.encode(np.asfortranarray(m))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": t["image_id"],
                    "category_id": label,
                    "iscrowd": 0,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "area": float(mask_utils.area(rle)),
                    "segmentation": rle,
                }
            )
        for box, label, s, m in zip(
            p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist(), p["masks"][:, 0].numpy()
        ):
            dets.append(
                {
                    "image_id": t["image_id"],
                    "category_id": label,
                    "score": s,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "segmentation": mask_utils.encode(np.asfortranarray((m >= 0.5).astype(np.uint8))),
                }
            )
    ours = ev.compute()
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        for iou_type in ("bbox", "segm"):
            e = COCOeval(gt, gt.loadRes(dets), iou_type)
            e.evaluate(), e.accumulate(), e.summarize()
            for k, v in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), e.stats[:6]):
                assert ours[f"val/{iou_type}_{k}"] == pytest.approx(
                    v if v >= 0 else float("nan"), abs=1e-6, nan_ok=True
                )
    assert 0.05 < ours["val/segm_AP"] < 0.95  # the perturbation makes this a real test


def test_merging_rank_states_equals_one_evaluator():
    """What DDP does at epoch end: the union of the ranks' states scores like one evaluator."""
    ds = ShapesDataset(8, 64, seed=4)
    whole, ranks = CocoEvaluator(NAMES), [CocoEvaluator(NAMES), CocoEvaluator(NAMES)]
    for i in range(len(ds)):
        _, t = ds[i]
        p = perfect(t)
        p["scores"] = torch.linspace(1, 0.5, len(p["scores"]))
        p["boxes"] = p["boxes"] + i % 3
        whole.update([t], [p])
        ranks[i % 2].update([t], [p])
        if i == 0:  # DistributedSampler pads a rank by repeating an image: it is scored once in the union
            ranks[1].update([t], [p])
    merged = CocoEvaluator(NAMES)
    merged.merge([(r.images, r.gt, r.dt) for r in ranks])
    assert sorted(a["id"] for a in merged.gt) == list(range(1, len(whole.gt) + 1))
    a, b = whole.compute(), merged.compute()
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], nan_ok=True) for k in a)
    assert a["val/bbox_AP"] < 1.0


def test_known_traps_image_id_zero_no_iscrowd_unknown_images():
    """Image id 0 and targets without iscrowd score normally; predictions for images that have no
    ground truth are left out instead of crashing pycocotools; no predictions at all is 0.0."""
    _, t = ShapesDataset(1, 64, seed=3)[0]
    t = {k: v for k, v in t.items() if k != "iscrowd"}
    t["image_id"] = 0
    ev = CocoEvaluator(NAMES)
    ev.update([t], [perfect(t)])
    ev.add_predictions([99], [perfect(t)])
    assert ev.gt[0]["id"] == 1 and ev.compute()["val/segm_AP"] == pytest.approx(1.0)
    nothing = CocoEvaluator(NAMES)
    nothing.add_targets([t])
    assert nothing.compute()["val/bbox_AP"] == 0.0
