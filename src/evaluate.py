#!/usr/bin/env python
"""Evaluate a checkpoint (``python src/evaluate.py --help``).

load checkpoint -> data split -> one network pass (raw detections cached) -> COCO, VOC mAP@0.5,
confusion/precision/recall, PR curves at the configured setting -> optional inference-only
re-tuning over (confidence, NMS, max detections) -> files + MLflow.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, installed or not

import hydra  # noqa: E402
import torch  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from masklab import MasklabError, exit_on_error  # noqa: E402
from masklab.data.datamodule import build_datamodule  # noqa: E402
from masklab.eval import runner  # noqa: E402
from masklab.eval.checkpoint import load_checkpoint, runtime_config  # noqa: E402
from masklab.eval.outputs import log_to_mlflow, write_outputs, write_retune  # noqa: E402

log = logging.getLogger("masklab.evaluate")


def evaluate(cfg: DictConfig, out: Path) -> dict:
    module, trained, run_id = load_checkpoint(cfg.ckpt)
    rcfg = runtime_config(trained, cfg, list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [])
    names, prefix, nms = module.class_names, cfg.split, rcfg.nms
    if cfg.cache:
        gt, raw = torch.load(cfg.cache, weights_only=False)
    else:
        dm = build_datamodule(rcfg)
        if cfg.split not in ("val", "test") or dm.datasets[cfg.split] is None:
            raise MasklabError(f"split={cfg.split}: this data option has no such split (val, test: {dm.datasets['test'] is not None})")
        loader = dm.test_dataloader() if cfg.split == "test" else dm.val_dataloader()
        device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        gt, raw = runner.run_network(module.model, loader, cfg.score_floor, device)
        torch.save((gt, raw), out / "raw_predictions.pt")
    metrics, ev, extra = runner.evaluate_setting(gt, raw, names, nms.box_score_thresh, nms.box_nms_thresh,
                                                 nms.box_detections_per_img, prefix)
    files = write_outputs(out, metrics, ev, extra, names, prefix)
    grid = {k: list(cfg.retune[k]) if cfg.retune[k] is not None else [v] for k, v in
            (("score_thresh", nms.box_score_thresh), ("nms_thresh", nms.box_nms_thresh), ("max_dets", nms.box_detections_per_img))}
    if any(len(v) > 1 for v in grid.values()):
        rows = runner.retune(gt, raw, names, grid, cfg.score_floor, prefix)
        files += write_retune(out, rows, runner.best_settings(rows))
    if cfg.log_mlflow and rcfg.logger.get("_target_"):
        log_to_mlflow(rcfg, run_id, metrics, files)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    with exit_on_error(log):
        metrics = evaluate(cfg, out)
    width = max(map(len, metrics))
    print("\n".join(f"{k:<{width}}  {v:.4f}" for k, v in metrics.items()))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
