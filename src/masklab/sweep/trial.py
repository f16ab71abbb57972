"""The job side of a sweep: the trial a training run belongs to, and the Lightning pruning bridge.

The sweeper passes ``sweep.{study,storage,trial_id,parent_run_id}`` as overrides, so a trial finds
its Optuna trial whether the launcher runs it in this process or elsewhere.
"""

from __future__ import annotations

import math

import lightning.pytorch as L
import optuna
from omegaconf import DictConfig, OmegaConf

from masklab.sweep import asha
from masklab.sweep.study import StudySettingError, heartbeat, make_pruner, open_storage


def trial_of(s: DictConfig | None) -> tuple[optuna.Study, optuna.Trial] | tuple[None, None]:
    """The Optuna trial the ``sweep`` node names (study, storage, trial_id), or none outside a sweep."""
    if not s or s.get("trial_id") is None:
        return None, None
    storage = open_storage(s.storage)
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(s.study))
    pruner = attrs.get("masklab_pruner")
    study = optuna.load_study(
        study_name=s.study, storage=storage, pruner=make_pruner(pruner["name"], pruner["kwargs"]) if pruner else None
    )
    return study, optuna.Trial(study, int(s.trial_id))


def pruning_bridge(
    study: optuna.Study, trial: optuna.Trial, optimized_metric: str, sweep: DictConfig | None = None
) -> PruningBridge:
    """The bridge for the signal the sweeper chose (``hydra.sweeper.prune_on``; default the optimized metric);
    ``sweep.stop_epoch``: asha's rung, where this trial pauses."""
    signal = study.user_attrs.get("masklab_pruner", {})
    return PruningBridge(
        study,
        trial,
        signal.get("on") or optimized_metric,
        signal.get("sign", 1),
        objectives=signal.get("objectives", ()),
        stop_epoch=sweep.get("stop_epoch") if sweep else None,
    )


class PruningBridge(L.Callback):
    """Report ``metric`` (times ``sign``) to the trial after every validation epoch; stop training when
    the pruner says so. ``sign`` -1 turns a lower-is-better metric (``val/loss``) into the study's direction.

    Pruning stops the Trainer gracefully (``should_stop``) instead of raising inside Lightning, so the
    MLflow run ends FINISHED with ``trial_state=PRUNED`` rather than FAILED; ``train.py`` raises
    ``optuna.TrialPruned`` after ``fit`` returns.
    """

    def __init__(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        metric: str,
        sign: int = 1,
        objectives=(),
        stop_epoch: int | None = None,
    ):
        self.study, self.trial, self.metric, self.sign = study, trial, metric, sign
        self.objectives = list(
            objectives
        )  # checked at the first validation: a typo fails the trial now, not at its end
        self.stop_epoch = stop_epoch  # asha: pause once this many epochs are trained (unless it is the last)
        self.pruned_at: int | None = None
        self.pruned_value: float | None = None
        self.paused_at: int | None = None

    @property
    def stopped(self) -> bool:
        """Pruned or paused: no test, no prediction sheet; the trial ends PRUNED."""
        return self.pruned_at is not None or self.paused_at is not None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        value = trainer.callback_metrics.get(self.metric)
        heartbeat(self.study, self.trial._trial_id)
        logged = sorted(k for k in trainer.callback_metrics if k.startswith("val/"))
        if value is None:
            raise StudySettingError(
                f"hydra.sweeper.prune_on={self.metric!r} is not logged by validation; choose one of {logged}"
            )
        missing = [m for m in self.objectives if m not in trainer.callback_metrics]
        if missing:
            raise StudySettingError(
                f"hydra.sweeper.objectives {missing} are not logged by validation; choose from {logged}"
            )
        epoch = trainer.current_epoch
        if self.stop_epoch and epoch + 1 >= self.stop_epoch and epoch + 1 < trainer.max_epochs:
            self.paused_at = epoch  # at a rung: its checkpoint waits for a promotion (masklab.sweep.asha)
            self.trial.set_user_attr("asha_paused", True)
            trainer.should_stop = True
        if (
            not math.isfinite(float(value)) or len(self.study.directions) > 1
        ):  # Optuna prunes single-objective studies only
            return
        self.trial.report(self.sign * float(value), step=epoch)
        if self.paused_at is not None:
            return
        if self.trial.should_prune():
            self.pruned_at, self.pruned_value = trainer.current_epoch, float(value)
            trainer.should_stop = True


def finish_trial(trial: optuna.Trial, bridge: PruningBridge, metrics: dict) -> None:
    """Leave the final metrics on the trial (for several objectives); raise ``TrialPruned`` if it was pruned."""
    trial.set_user_attr("metrics", {k: v for k, v in metrics.items() if math.isfinite(v)})
    if bridge.paused_at is not None:
        settings = asha.settings(trial.study.user_attrs.get("masklab_pruner", {}).get("kwargs"))
        raise optuna.TrialPruned(
            f"asha: paused after epoch {bridge.paused_at + 1}, resumed if in the top "
            f"1/{settings['reduction_factor']} there"
        )
    if bridge.pruned_at is not None:
        raise optuna.TrialPruned(
            f"pruned by the {type(trial.study.pruner).__name__} after epoch {bridge.pruned_at} "
            f"({bridge.metric} {bridge.pruned_value:.4g})"
        )


class OptunaTrial(L.Callback):
    """The sweep's side of a training run (``callbacks.optuna_trial``): nothing outside a sweep; in a trial it
    reports validation to the pruner (:class:`PruningBridge`), records the MLflow run on the trial and finishes
    the trial with the final metrics (``TrialPruned`` for a pruned or paused one)."""

    def __init__(self, sweep: DictConfig | dict | None, optimized_metric: str):
        self.sweep, self.metric = OmegaConf.create(sweep or {}), optimized_metric
        self.bridge: PruningBridge | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.bridge is not None or self.sweep.get("trial_id") is None:
            return
        study, trial = trial_of(self.sweep)
        self.bridge = pruning_bridge(study, trial, self.metric, self.sweep)
        run_id = getattr(trainer.logger, "run_id", None)
        if run_id and trainer.is_global_zero:
            trial.set_user_attr("mlflow_run_id", run_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bridge is not None:
            self.bridge.on_validation_end(trainer, pl_module)

    @property
    def stopped(self) -> bool:
        return self.bridge is not None and self.bridge.stopped

    def finish(self, metrics: dict) -> None:
        if self.bridge is not None:
            finish_trial(self.bridge.trial, self.bridge, metrics)
