#!/usr/bin/env python
"""Train Mask R-CNN from composed Hydra config groups (``python src/train.py --help``).

compose config -> datamodule, module, callbacks, logger, trainer -> fit -> test -> return the
value of ``optimized_metric`` (what the Optuna sweeper optimises).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, installed or not

import hydra  # noqa: E402
import lightning.pytorch as L  # noqa: E402
import optuna  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from masklab import exit_on_error, quiet_lightning, user_message  # noqa: E402
from masklab.data.auto import resolve  # noqa: E402
from masklab.data.datamodule import build_datamodule  # noqa: E402
from masklab.eval.gallery import log_predictions  # noqa: E402
from masklab.model.module import MaskRCNNModule  # noqa: E402
from masklab.model.trainer import make_trainer  # noqa: E402
from masklab.sweep.trial import finish_trial, pruning_bridge, sweep_tags, trial_of  # noqa: E402
from masklab.track.history import History, ValidateLastEpoch  # noqa: E402
from masklab.track.mlflow_utils import (
    artifact_location,
    default_run_name,
    end_failed,
    log_fit,  # noqa: E402
    log_params,
    log_run_files,
)
from masklab.track.resume import check_resumable, resume_checkpoint  # noqa: E402
from masklab.track.summary import export_files, run_summary  # noqa: E402

log = logging.getLogger("masklab.train")
quiet_lightning()


def make_logger(cfg: DictConfig, run_id: str | None):
    if not cfg.logger.get("_target_"):
        return False
    trial = cfg.sweep.trial_number
    name = cfg.run_name or (f"{cfg.sweep.study}-trial{trial:03d}" if trial is not None else default_run_name(cfg))
    return instantiate(
        cfg.logger,
        run_name=name,
        run_id=run_id,
        artifact_location=artifact_location(cfg.logger.tracking_uri),
        tags=sweep_tags(cfg) or None,
    )


def train(cfg: DictConfig, output_dir: str | Path, extra_callbacks=()) -> float:
    """One training run; returns the best value of ``cfg.optimized_metric``."""
    L.seed_everything(cfg.seed, workers=True)
    cfg, fit = resolve(cfg)  # every `auto` value from the prepared data's statistics, logged with its reason
    ckpt_path = resume_checkpoint(cfg.resume, Path(cfg.paths.output_root) / cfg.experiment_name)
    datamodule = build_datamodule(cfg)
    module = MaskRCNNModule(cfg, class_names=datamodule.class_names)
    run_id = check_resumable(ckpt_path, module, cfg) if ckpt_path else None  # its MLflow run goes on
    logger = make_logger(cfg, run_id)
    try:
        if logger:
            log_fit(logger, fit)
        return _fit_and_report(cfg, output_dir, datamodule, module, ckpt_path, logger, extra_callbacks)
    except optuna.TrialPruned:
        raise  # a pruned trial: its run is tagged pruned, not failed
    except Exception:
        # Lightning finalizes a run that fails inside fit/test; one that fails before (log_params, the trial,
        # the Trainer) stayed RUNNING, and one that fails after (files, export) said FINISHED for a failed command
        if logger:
            end_failed(logger)
        raise


def _fit_and_report(cfg: DictConfig, output_dir, datamodule, module, ckpt_path, logger, extra_callbacks) -> float:
    """``train`` once its MLflow run is open: fit, test the best checkpoint, log and export."""
    ckpt_dir = Path(output_dir) / "checkpoints"
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        monitor=cfg.optimized_metric,
        mode=cfg.optimized_mode,
        filename="best-epoch{epoch:03d}",
        auto_insert_metric_name=False,
    )
    # Lightning 2.6 writes save_last=True only when a top-k file is written: a separate callback
    # keeps last.ckpt truly the latest epoch, which is what resume needs.
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
    if logger:
        log_params(logger, cfg)
    study, trial = trial_of(cfg)  # an Optuna trial of a sweep, or none
    bridge = [pruning_bridge(study, trial, cfg)] if trial else []
    if trial and logger:
        trial.set_user_attr("mlflow_run_id", logger.run_id)
    trainer = make_trainer(
        cfg,
        max_epochs=cfg.schedule.epochs,
        max_steps=cfg.schedule.get("steps") or -1,
        logger=logger,
        callbacks=[checkpoint, last, History(output_dir), ValidateLastEpoch(), *bridge, *extra_callbacks],
        default_root_dir=str(output_dir),
        gradient_clip_val=cfg.grad_clip_norm or None,
    )
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "test/"))}
    pruned = bool(bridge) and bridge[0].stopped
    if datamodule.datasets["test"] is not None and checkpoint.best_model_path and not pruned:
        test = trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint.best_model_path, verbose=False)
        metrics.update(test[0] if test else {})
    best = checkpoint.best_model_score
    value = float(best) if best is not None else metrics.get(cfg.optimized_metric, float("nan"))
    if trainer.is_global_zero and checkpoint.best_model_path and not pruned:
        log_predictions(cfg, module, datamodule, checkpoint.best_model_path, output_dir, logger)
    if logger:
        log_run_files(logger, cfg, checkpoint.best_model_path, best)
    if trainer.is_global_zero:  # once under DDP, not once per rank
        print(
            run_summary(
                metrics,
                cfg.optimized_metric,
                value,
                checkpoint.best_model_path,
                logger.run_id if logger else None,
                cfg.experiment_name,
                cfg.paths.tracking_uri,
            )
        )
        export_files(cfg.export, checkpoint.best_model_path, metrics, value, Path(output_dir) / "history.csv")
    if trial:
        finish_trial(trial, bridge[0], metrics)  # raises optuna.TrialPruned for a pruned trial
    return value


#: jobs of a plain multirun (``-m optimizer.lr=0.01,0.1``) that failed with a user error: "#<n> <dir>: <message>"
FAILED_JOBS: list[str] = []


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        with exit_on_error(log):
            return train(cfg, hc.runtime.output_dir)
    if cfg.sweep.trial_id is not None:
        return train(cfg, hc.runtime.output_dir)  # an Optuna trial: the sweeper records a failure with its message
    try:  # Hydra's own grid stopped at the first failed job, with a traceback, and ran none of the others
        return train(cfg, hc.runtime.output_dir)
    except Exception as exc:
        message = user_message(exc)
        if message is None:  # a bug: keep its traceback
            raise
        log.error("job #%d failed: %s", hc.job.num, message)
        FAILED_JOBS.append(f"#{hc.job.num} {hc.runtime.output_dir}: {message}")
        return float("nan")


if __name__ == "__main__":
    main()
    if FAILED_JOBS:  # the grid ran to its end; say which jobs failed and exit non-zero
        sys.exit(f"error: {len(FAILED_JOBS)} job(s) of the multirun failed:\n" + "\n".join(FAILED_JOBS))
