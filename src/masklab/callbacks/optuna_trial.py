"""The sweep's side of a training run (``callbacks.optuna_trial``): the trial it belongs to and what it reports to
the pruner. The sweeper passes ``sweep.*`` overrides (``conf/config.yaml``; the storage's password masked, revealed
from this process's environment), so a trial finds its Optuna trial wherever it runs; outside a sweep the callback
does nothing.
"""

from __future__ import annotations

import logging
import math

import lightning.pytorch as L
import optuna
from omegaconf import DictConfig, OmegaConf

from masklab import MasklabError, StudySettingError, first_line
from masklab.secrets import mask
from masklab.sweep.schedulers import build_pruner
from masklab.sweep.storage import SILENCE_S, patiently, trial_of, unreachable

log = logging.getLogger(__name__)


def pruning_bridge(study: optuna.Study, trial: optuna.Trial, optimized_metric: str, stop_epoch=None) -> PruningBridge:
    """The bridge for the signal the sweeper chose (``hydra.sweeper.prune_on``; default the optimized metric)."""
    signal = study.user_attrs.get("masklab_pruner", {})
    on, sign, objectives = signal.get("on") or optimized_metric, signal.get("sign", 1), signal.get("objectives", ())
    return PruningBridge(study, trial, on, sign, objectives=objectives, stop_epoch=stop_epoch)


class TrialPaused(optuna.TrialPruned):
    """ASHA's pause at a rung: the sweeper marks it (PRUNED, ``asha_paused``), waiting out a database outage."""


class PruningBridge(L.Callback):
    """Report ``metric`` (times ``sign``) to the trial after every validation epoch; stop training when the pruner
    says so, or at ``stop_epoch`` (ASHA's rung: paused). Stopping is graceful (``should_stop``): the MLflow run ends
    FINISHED with ``trial_state=PRUNED``, and :meth:`finish` raises ``optuna.TrialPruned`` after ``fit``."""

    def __init__(self, study, trial, metric: str, sign: int = 1, objectives=(), stop_epoch: int | None = None):
        self.study, self.trial, self.metric, self.sign = study, trial, metric, sign
        self.objectives = list(objectives)  # checked at the first validation: a typo fails now, not at the end
        self.stop_epoch = stop_epoch
        self.pruned_at = self.pruned_value = self.paused_at = None

    @property
    def stopped(self) -> bool:
        """Pruned or paused: no test, no prediction sheet; the trial ends PRUNED."""
        return self.pruned_at is not None or self.paused_at is not None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        logged = sorted(k for k in trainer.callback_metrics if k.startswith("val/"))
        if (value := trainer.callback_metrics.get(self.metric)) is None:
            raise StudySettingError(
                f"hydra.sweeper.prune_on={self.metric!r} is not logged by validation; choose one of {logged}"
            )
        if missing := [m for m in self.objectives if m not in trainer.callback_metrics]:
            raise StudySettingError(
                f"hydra.sweeper.objectives {missing} are not logged by validation; choose from {logged}"
            )
        epoch = trainer.current_epoch
        if self.stop_epoch and epoch + 1 >= self.stop_epoch and epoch + 1 < trainer.max_epochs:
            self.paused_at = epoch  # at a rung: its checkpoint waits for a promotion (masklab.sweep.asha)
            trainer.should_stop = True
        if not math.isfinite(float(value)) or len(self.study.directions) > 1:  # Optuna prunes one objective only
            return
        try:
            self.trial.report(self.sign * float(value), step=epoch)
            prune = self.paused_at is None and self.trial.should_prune()
        except Exception as exc:  # the database restarting or cut off: this epoch goes unjudged, training goes on
            if (cut := unreachable(exc)) is None:
                raise
            log.warning("epoch %d not reported to the study (its database does not answer: %s); the pruner skips it",
                        epoch, mask(first_line(cut)))  # fmt: skip
            return
        if prune:
            self.pruned_at, self.pruned_value = epoch, float(value)
            trainer.should_stop = True

    def finish(self, metrics: dict, wait=lambda call: call()) -> None:
        """Leave the final metrics on the trial (for several objectives), waiting for its database as ``wait`` does;
        raise ``TrialPruned`` if it stopped."""
        try:
            wait(lambda: self.trial.set_user_attr("metrics", {k: v for k, v in metrics.items() if math.isfinite(v)}))
        except Exception as exc:  # the sweeper tells the outcome once the database is back (one objective: the value)
            if (cut := unreachable(exc)) is None and not isinstance(exc, MasklabError):  # MasklabError: waited enough
                raise
            log.warning("the final metrics did not reach the study (%s)", mask(first_line(cut or exc)))
        if self.paused_at is not None:
            eta = self.study.user_attrs.get("masklab_pruner", {}).get("spec", {}).get("reduction_factor", 3)
            raise TrialPaused(f"asha: paused after epoch {self.paused_at + 1}, resumed if in the top 1/{eta} there")
        if self.pruned_at is not None:
            raise optuna.TrialPruned(
                f"pruned by the {type(self.study.pruner).__name__} after epoch {self.pruned_at} "
                f"({self.metric} {self.pruned_value:.4g})"
            )


class OptunaTrial(L.Callback):
    """The sweep's side of a training run (``callbacks.optuna_trial``): nothing outside a sweep; in a trial it
    reports validation to the pruner (:class:`PruningBridge`), records the MLflow run on the trial and finishes
    the trial with the final metrics (``TrialPruned`` for a pruned or paused one)."""

    def __init__(self, sweep: DictConfig | dict | None, optimized_metric: str):
        self.sweep, self.metric = OmegaConf.create(sweep or {}), optimized_metric
        self.bridge: PruningBridge | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        s = self.sweep
        if stage != "fit" or self.bridge is not None or s.get("trial_id") is None:
            return
        study, trial = self.wait(lambda: trial_of(s.study, s.storage, s.trial_id, s.get("proxy"), self.every_s))
        if spec := study.user_attrs.get("masklab_pruner", {}).get("spec"):
            study.pruner = build_pruner(spec)[0]  # the trial decides on pruning in its own process
        self.bridge = pruning_bridge(study, trial, self.metric, s.get("stop_epoch"))
        if (run_id := getattr(trainer.logger, "run_id", None)) and trainer.is_global_zero:
            self.wait(lambda: trial.set_user_attr("mlflow_run_id", run_id))

    @property
    def every_s(self) -> float:
        """The worker's ``heartbeat_s``: how often the trial tries its database again, and how long a call may wait."""
        return float(self.sweep.get("heartbeat_s") or SILENCE_S)

    def wait(self, call):
        """``call()``, waiting for a database that does not answer (a restart) as the trial's worker waits."""
        return patiently(call, self.sweep.storage, float(self.sweep.get("stale_after_s") or 0), self.every_s)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bridge is not None:
            self.bridge.on_validation_end(trainer, pl_module)

    @property
    def stopped(self) -> bool:
        return self.bridge is not None and self.bridge.stopped

    def finish(self, metrics: dict) -> None:
        if self.bridge is not None:
            self.bridge.finish(metrics, self.wait)
