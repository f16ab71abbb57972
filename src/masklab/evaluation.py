"""One evaluation of a checkpoint (``python src/evaluate.py``): load checkpoint -> data split -> one network pass
(raw detections cached) -> COCO, VOC mAP@0.5, confusion/precision/recall at min_score, PR curves at the configured
setting -> optional inference-only re-tuning over (confidence, NMS, max detections) -> files + MLflow.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from masklab import MasklabError
from masklab.checks import check_numbers, in_range
from masklab.data.datamodule import build_datamodule
from masklab.eval import runner
from masklab.eval.checkpoint import load_for_inference, resolve_device, warn_other_data
from masklab.eval.outputs import log_to_mlflow, write_outputs, write_retune
from masklab.track.mlflow_utils import ensure_store


def evaluate(cfg: DictConfig, out: Path, overridden: list[str] | None = None) -> dict:
    """``overridden``: the command line's overrides (default: Hydra's): the runtime keys to take from ``cfg``."""
    check_numbers(cfg, {"min_score": (in_range(0, 1), "a score in [0, 1]")})
    module, rcfg, changed, run_id = load_for_inference(cfg, overridden)
    if cfg.log_mlflow and rcfg.logger.get("_target_"):
        ensure_store(rcfg.paths.tracking_uri)  # a server that does not answer: one line now, not after the evaluation
    names, prefix, nms = module.class_names, cfg.split, rcfg.nms
    grid = _retune_grid(cfg, nms)
    if cfg.cache and changed:
        raise MasklabError(
            f"cache={cfg.cache}: {', '.join(changed)} changes the network pass, which cache= "
            "skips; drop cache= to run the network at that setting"
        )
    if cfg.cache:
        gt, raw = _load_cache(cfg.cache)
    else:
        dm = build_datamodule(rcfg)
        if cfg.split not in ("val", "test") or dm.datasets[cfg.split] is None:
            has = [k for k in ("val", "test") if dm.datasets.get(k) is not None]
            raise MasklabError(f"split={cfg.split}: choose one of the held-out splits this data has: {has}")
        if list(dm.class_names) != list(names):  # category id k would be scored as the model's class k
            raise MasklabError(
                f"ckpt={cfg.ckpt}: the model was trained on classes {list(names)} but "
                f"data={rcfg.data.get('name')} has {list(dm.class_names)}; evaluate it on data with "
                "the same classes in the same order"
            )
        warn_other_data(module, rcfg, cfg)
        loader = dm.test_dataloader() if cfg.split == "test" else dm.val_dataloader()
        gt, raw = runner.run_network(module.model, loader, cfg.score_floor, resolve_device(cfg.device))
        torch.save((gt, raw), out / "raw_predictions.pt")
    metrics, ev, extra = runner.evaluate_setting(
        gt,
        raw,
        names,
        nms.box_score_thresh,
        nms.box_nms_thresh,
        nms.box_detections_per_img,
        prefix,
        min_score=cfg.min_score,
    )
    files = write_outputs(out, metrics, ev, extra, names, prefix)
    if any(len(v) > 1 for v in grid.values()):
        rows = runner.retune(gt, raw, names, grid, cfg.score_floor, prefix)
        files += write_retune(out, rows, runner.best_settings(rows))
    if cfg.log_mlflow and rcfg.logger.get("_target_"):
        log_to_mlflow(rcfg.paths.tracking_uri, rcfg.experiment_name, run_id, metrics, files)
    return metrics


def _retune_grid(cfg: DictConfig, nms) -> dict[str, list]:
    """retune.* lists (null: the configured value), checked to be numbers before the network runs."""
    grid = {
        k: list(cfg.retune[k]) if cfg.retune[k] is not None else [v]
        for k, v in (
            ("score_thresh", nms.box_score_thresh),
            ("nms_thresh", nms.box_nms_thresh),
            ("max_dets", nms.box_detections_per_img),
        )
    }
    for key, values in grid.items():  # (the nms.* defaults were checked with the checkpoint: load_for_inference)
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise MasklabError(f"retune.{key}={values}: numbers expected, not {bad}")
    if cfg.retune.score_thresh is not None and min(grid["score_thresh"]) < cfg.score_floor:
        raise MasklabError(
            f"retune.score_thresh={grid['score_thresh']}: below score_floor={cfg.score_floor}, "
            "the lowest confidence the network pass keeps; lower score_floor"
        )
    return grid


def _load_cache(path: str):
    """(ground truth, raw detections) an earlier evaluate.py pass saved as raw_predictions.pt."""
    if not Path(path).is_file():
        raise MasklabError(f"cache={path}: file not found (an earlier evaluate.py run's raw_predictions.pt)")
    try:
        gt, raw = torch.load(path, weights_only=False)
    except Exception as exc:  # not a torch file, or another object than evaluate.py's pair
        raise MasklabError(f"cache={path}: not an evaluate.py raw_predictions.pt ({type(exc).__name__})") from None
    return gt, raw
