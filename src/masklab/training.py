"""One training run: config -> auto values from the data -> datamodule, module, callbacks, logger, trainer (each
from its config group) -> fit -> test the best checkpoint -> the best value of ``optimized_metric`` (what a sweep
optimises). ``src/train.py`` is its CLI.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as L
from omegaconf import DictConfig, OmegaConf

from masklab import callbacks as cb
from masklab.data.auto import resolve
from masklab.data.canonical import digest
from masklab.data.datamodule import build_datamodule
from masklab.model.module import build_module
from masklab.model.trainer import make_trainer
from masklab.track.mlflow_utils import end_failed, log_fit, log_params, log_run_files, make_logger
from masklab.track.resume import check_resumable, resume_checkpoint
from masklab.track.summary import export_files, run_summary

log = logging.getLogger("masklab.train")


def train(cfg: DictConfig, output_dir: str | Path) -> float:
    """One training run in ``output_dir``; returns the best value of ``cfg.optimized_metric``."""
    L.seed_everything(cfg.seed, workers=True)
    cfg, fit = resolve(cfg)  # every `auto` value from the prepared data's statistics, logged with its reason
    OmegaConf.update(cfg, "paths.output_dir", str(output_dir), force_add=True)
    callbacks = cb.instantiate_callbacks(cfg.callbacks)  # their settings checked before the data and model are built
    ckpt_path = resume_checkpoint(cfg.resume, Path(cfg.paths.output_root) / cfg.experiment_name)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, class_names=datamodule.class_names)
    module.data_digest = digest(OmegaConf.select(cfg, "data.root", default=None))  # in its checkpoints: evaluate.py
    run_id = check_resumable(ckpt_path, module, cfg) if ckpt_path else None  # its MLflow run goes on
    logger = make_logger(cfg, run_id)
    try:
        if logger:
            log_fit(logger, fit, module.data_digest)
            log_params(logger, cfg)
        return fit_and_test(cfg, datamodule, module, callbacks, ckpt_path, logger)
    except Exception as exc:
        # Lightning finalizes a run that fails inside fit/test; one that fails before or after it stayed RUNNING
        if logger:
            end_failed(logger, exc)
        raise


def fit_and_test(cfg: DictConfig, datamodule, module, callbacks: list, ckpt_path: str | None, logger) -> float:
    """Fit, test the best checkpoint, then the run's files, summary and exports."""
    trainer = make_trainer(
        cfg.trainer,
        max_epochs=cfg.schedule.epochs,
        max_steps=cfg.schedule.get("steps") or -1,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=cfg.paths.output_dir,
        gradient_clip_val=cfg.grad_clip_norm or None,
    )
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    checkpoint = trainer.checkpoint_callback  # the first ModelCheckpoint: callbacks.best_checkpoint
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "test/"))}
    early = cb.stopped(callbacks)  # a pruned or paused trial: no test, no gallery
    if datamodule.datasets["test"] is not None and checkpoint.best_model_path and not early:
        test = trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint.best_model_path, verbose=False)
        metrics.update(test[0] if test else {})
    best = checkpoint.best_model_score
    value = float(best) if best is not None else metrics.get(cfg.optimized_metric, float("nan"))
    cb.after_test(callbacks, trainer, module, metrics)
    if logger:
        log_run_files(logger, cfg, checkpoint.best_model_path, best)
    if trainer.is_global_zero:  # once under DDP, not once per rank
        run = logger.run_id if logger else None
        print(run_summary(metrics, cfg.optimized_metric, value, checkpoint.best_model_path, run,
                          cfg.experiment_name, cfg.paths.tracking_uri))  # fmt: skip
        export_files(cfg.export, checkpoint.best_model_path, metrics, value, Path(cfg.paths.output_dir) / "history.csv")
    cb.finish(callbacks, metrics)  # a sweep's trial raises optuna.TrialPruned here when it was pruned
    return value
