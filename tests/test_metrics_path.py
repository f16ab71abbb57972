"""One metric path: the evaluators of masklab.metrics.registry serve training validation and evaluate.py alike."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from conftest import compose_cfg
from masklab import MasklabError
from masklab.metrics import registry
from masklab.metrics.coco import CocoEvaluator


def _square(x: int, y: int, s: int = 8, size: int = 32) -> torch.Tensor:
    m = torch.zeros(1, size, size, dtype=torch.uint8)
    m[0, y : y + s, x : x + s] = 1
    return m


def _state():
    """Two images: one detection right per image, one a miss (image 2 holds two objects), one false positive."""
    ev = CocoEvaluator(["a"])
    gts = [(_square(2, 2),), (_square(2, 2), _square(20, 20))]
    targets = [
        {"image_id": torch.tensor(i), "masks": torch.cat(m), "labels": torch.ones(len(m), dtype=torch.int64),
         "boxes": torch.tensor([[2.0, 2, 10, 10], [20, 20, 28, 28]][: len(m)]), "iscrowd": torch.zeros(len(m))}
        for i, m in enumerate(gts, 1)
    ]  # fmt: skip
    preds = [
        {"masks": _square(2, 2)[None].float(), "labels": torch.tensor([1]), "scores": torch.tensor([0.9]),
         "boxes": torch.tensor([[2.0, 2, 10, 10]])},
        {"masks": torch.cat([_square(2, 2), _square(12, 2)])[:, None].float(), "labels": torch.tensor([1, 1]),
         "scores": torch.tensor([0.8, 0.6]), "boxes": torch.tensor([[2.0, 2, 10, 10], [12, 2, 20, 10]])},
    ]  # fmt: skip
    ev.update(targets, preds)
    return ev


def test_the_evaluators_compute_hand_counted_numbers():
    metrics, extra = registry.compute(_state(), ["coco", "voc", "prf"], ["a"], "val", min_score=0.5)
    # 3 detections at >= 0.5: 2 right, 1 wrong; 3 objects: 2 found
    assert metrics["val/precision"] == pytest.approx(2 / 3) and metrics["val/recall"] == pytest.approx(2 / 3)
    assert metrics["val/f1"] == pytest.approx(2 / 3)
    # per image (Matterport): image 1 AP 1; image 2: hit at rank 1 (p 1, r 0.5), miss at rank 2 -> AP 0.5
    assert metrics["val/voc_mAP50"] == pytest.approx(0.75)
    assert extra["confusion"].tolist() == [[0, 1], [1, 2]]
    assert 0 < metrics["val/segm_AP50"] < 1
    only_coco, _ = registry.compute(_state(), ["coco"], ["a"], "val")
    assert "val/voc_mAP50" not in only_coco and only_coco["val/segm_AP50"] == metrics["val/segm_AP50"]


def test_the_evaluator_an_optimized_metric_needs_is_added_and_unknown_names_are_one_line():
    assert registry.needed([], "val/voc_mAP50") == ["coco", "voc"]
    assert registry.needed(["prf"], "val/segm_AP") == ["coco", "prf"]
    assert registry.needed([], "val/recall_a") == ["coco", "prf"]
    assert registry.needed([], "val/loss") == ["coco"]
    with pytest.raises(MasklabError, match=r"^val_metrics \['vco'\]: unknown evaluator\(s\); choose from"):
        registry.needed(["vco"])


def test_training_can_optimise_voc_map50_and_logs_it_every_validation(tmp_path):
    from masklab.training import train

    GlobalHydra.instance().clear()
    cfg = compose_cfg(["schedule.epochs=2", "optimized_metric=val/voc_mAP50", "val_metrics=[prf]"])
    value = train(cfg, tmp_path / "run")
    with open(tmp_path / "run" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for r in rows:  # precision and F1 are empty (NaN) where no detection reaches val_min_score after 2 tiny epochs
        assert all(k in r for k in ("val/f1", "val/precision", "val/recall"))
        assert r["val/voc_mAP50"] != "" and r["val/segm_AP"] != ""
    best = max(float(r["val/voc_mAP50"]) for r in rows)
    assert math.isfinite(value) and value == pytest.approx(best, abs=1e-6)  # the best checkpoint watched voc_mAP50
    (ckpt,) = (tmp_path / "run" / "checkpoints").glob("best-epoch*.ckpt")
    epoch = max(range(2), key=lambda e: float(rows[e]["val/voc_mAP50"]))
    assert ckpt.name == f"best-epoch{epoch:03d}.ckpt"
