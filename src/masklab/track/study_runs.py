"""A study in MLflow: one parent run per study, each trial's run its child, and the study's outcome at the end.

One MLflow parent run per study (its id is kept in the study, so resumed sessions and parallel workers share
it; it is created under the storage's lock and found again by the study's uid, so a worker killed right after
creating it leaves no second one); each trial's own run is its child (``mlflow.parentRunId``, set by
``train.py``) and gets tags ``trial_number``, ``trial_state`` (COMPLETE / PRUNED / FAIL), ``fail_reason`` and
``sampled.<param>``. A trial whose worker died gets its run ended FAILED by whichever worker notices. At the end
the parent gets the best value and params and the files of :mod:`masklab.track.outcome`.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from masklab.secrets import mask
from masklab.sweep.asha import asha_root
from masklab.sweep.storage import owner_host
from masklab.track.outcome import retrain_command, save_plots, summary_table, write_best_params

log = logging.getLogger("masklab.sweep")


class Tracker:
    def __init__(self, cfg: DictConfig, store, sweep_dir: Path, fixed: list[str]):
        self.cfg, self.store, self.study = cfg, store, store.study
        self.sweep_dir, self.fixed = Path(sweep_dir), list(fixed)
        self.client, self.parent_id = self._connect(cfg.paths.tracking_uri), None

    def _connect(self, uri: str):
        """MLflow's client, its store opened (2 s of imports and checks): before the storage's lock, not under it."""
        if not self.cfg.logger.get("_target_"):
            return None
        from mlflow import MlflowClient

        from masklab.track.mlflow_utils import ensure_store

        ensure_store(uri)
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
        return client

    def open_parent(self) -> None:
        """The study's parent run: the known one, else one created now (call it under the storage's lock)."""
        if self.client is None:
            return
        from masklab.track.mlflow_utils import experiment_id

        exp_id = experiment_id(self.client, self.cfg.experiment_name)
        uid = self.study.user_attrs.get("masklab_uid") or uuid.uuid4().hex
        self.study.set_user_attr("masklab_uid", uid)
        known = self.study.user_attrs.get("mlflow_parent_run_id")
        if not known:  # created by a worker killed before it could record it
            found = self.client.search_runs([exp_id], f"tags.study_uid = '{uid}'", max_results=1)
            known = found[0].info.run_id if found else None
        if known:
            self.parent_id = known
            self.client.update_run(known, status="RUNNING")
            self._end_left_runs(exp_id)
        else:
            tags = {"masklab.role": "study", "study": self.study.study_name, "study_uid": uid}
            self.parent_id = self.client.create_run(
                exp_id, run_name=f"study-{self.study.study_name}", tags=tags
            ).info.run_id
            sweeper = self.cfg.hydra.sweeper
            for key in ("sampler", "seed", "pruner", "n_trials", "max_failures"):
                self.client.log_param(self.parent_id, f"sweeper.{key}", mask(str(sweeper.get(key))))
        self.study.set_user_attr("mlflow_parent_run_id", self.parent_id)

    def dead_run(self, trial: optuna.trial.FrozenTrial, reason: str) -> None:
        """End the MLflow run of a trial whose worker died: FAILED, with ``trial_state`` and ``fail_reason``."""
        if not self.client:
            return
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is None:  # killed before its run was recorded on the trial: find it by its tags
            query = f"tags.mlflow.parentRunId = '{self.parent_id}' and tags.trial_number = '{trial.number}'"
            exp_id = self.client.get_run(self.parent_id).info.experiment_id
            found = self.client.search_runs([exp_id], query + " and attributes.status = 'RUNNING'", max_results=1)
            run_id = found[0].info.run_id if found else None
        if run_id:  # its host: the machine that died, where its files are
            self._end(run_id, TrialState.FAIL, trial_number=trial.number, fail_reason=reason, host=owner_host(trial))

    def _end(self, run_id: str, state: TrialState, **tags) -> None:
        """End run ``run_id`` as its trial ended (FAILED for FAIL, else FINISHED), tagged ``trial_state`` and ``tags``
        (those with a value)."""
        for k, v in {"trial_state": state.name, **tags}.items():
            if v is not None and str(v):
                self.client.set_tag(run_id, k, str(v)[:5000])
        self.client.set_terminated(run_id, status="FAILED" if state == TrialState.FAIL else "FINISHED")

    def _end_left_runs(self, exp_id: str) -> None:
        """End the child runs left RUNNING of trials the study has finished (MLflow did not answer as they ended, or
        as their dead worker's trial was failed): with the trial's state, as :meth:`after_trial` would have."""
        trials = self.study.get_trials(deepcopy=False)
        live = {asha_root(t) for t in trials if t.state == TrialState.RUNNING}  # an ASHA promotion resumes its run
        done = {str(t.number): t for t in trials if t.state.is_finished()}
        query = f"tags.mlflow.parentRunId = '{self.parent_id}' and attributes.status = 'RUNNING'"
        for run in self.client.search_runs([exp_id], query, max_results=10000):
            t = done.get(run.data.tags.get("trial_number", ""))
            if t is None or asha_root(t) in live:
                continue
            key = "fail_reason" if t.state == TrialState.FAIL else "prune_reason"
            self._end(run.info.run_id, t.state, **{key: t.user_attrs.get(key)})
            log.info("trial %d's MLflow run was left RUNNING: ended %s", t.number, t.state.name)

    def repeat_run(self, trial: optuna.Trial, earlier: optuna.trial.FrozenTrial) -> None:
        """A child run for a trial that repeats ``earlier``'s parameters and was not trained: its params and final
        metrics copied from ``earlier``'s run, tagged ``same_as`` (so the study still has one child run per trial)."""
        if not self.client:
            return
        from mlflow.entities import Metric, Param

        source = earlier.user_attrs.get("mlflow_run_id")
        exp_id = self.client.get_run(self.parent_id).info.experiment_id
        run = self.client.create_run(
            exp_id,
            run_name=f"{self.study.study_name}-trial{trial.number:03d}",
            tags={
                "mlflow.parentRunId": self.parent_id,
                "same_as": str(earlier.number),
                "mlflow.note.content": f"not trained: the parameters of trial {earlier.number}",
            },
        )
        if source:
            data = self.client.get_run(source).data
            self.client.log_batch(
                run.info.run_id,
                params=[Param(k, v) for k, v in data.params.items()],
                metrics=[Metric(k, v, 0, 0) for k, v in data.metrics.items()],
            )
        self.client.set_terminated(run.info.run_id, status="FINISHED")
        trial.set_user_attr("mlflow_run_id", run.info.run_id)

    def _best(self) -> str:
        """How the study stands, as Optuna's own trial lines end: the best trial so far (single objective)."""
        with contextlib.suppress(ValueError, RuntimeError):  # none COMPLETE yet; several objectives (a front)
            best = self.study.best_trial
            return f"; best is trial {best.user_attrs.get('same_as', best.number)} with value {best.value:.4f}"
        return ""

    def after_trial(self, trial: optuna.Trial, state: TrialState, reason: str) -> TrialState:
        frozen = self.store.frozen(trial)
        # a PRUNED trial's value is Optuna's last reported pruning signal (maybe -val/loss): its reason says it
        value = frozen.values[0] if frozen.values and state == TrialState.COMPLETE else None
        log.info(
            "trial %d %s%s%s%s",
            trial.number,
            state.name,
            f" value={value:.4f}" if value is not None else "",
            f" ({reason})" if reason else "",
            self._best(),
        )
        run_id = frozen.user_attrs.get("mlflow_run_id")
        if self.client and run_id:
            tags = {
                "trial_number": str(trial.number),
                "trial_state": state.name,
                "study": self.study.study_name,
                **{f"sampled.{k}": str(v) for k, v in frozen.params.items()},
            }
            if "asha_rung" in frozen.user_attrs:  # one run per configuration: the trial of its latest rung
                tags["asha_rung"] = str(frozen.user_attrs["asha_rung"])
                if state != TrialState.PRUNED:  # resumed and finished: no longer waiting where it paused
                    with contextlib.suppress(Exception):  # (no such tag: it never paused)
                        self.client.delete_tag(run_id, "prune_reason")
            if reason:
                tags["fail_reason" if state == TrialState.FAIL else "prune_reason"] = reason[:5000]
            for k, v in tags.items():
                self.client.set_tag(run_id, k, v)
        if self.client and value is not None:
            self.client.log_metric(self.parent_id, "trial_value", value, step=trial.number)
        return state

    # ---- end of the study ----------------------------------------------------------------------
    def finish(self, names: list[str], status: str = "FINISHED") -> dict:
        """The study's table and best trial; its MLflow run ends ``status`` unless other workers' trials still run."""
        trials = self.study.get_trials(deepcopy=False)
        print(summary_table(trials, names))
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        result = {"study": self.study.study_name, "n_complete": len(done), "best": None}
        if done:
            best = self.study.best_trials[0] if len(names) > 1 else self.study.best_trial
            command = retrain_command(self.cfg.hydra, self.sweep_dir)
            path = write_best_params(self.sweep_dir / "tuned" / "best.yaml", best, self.fixed, names, command)
            result["best"] = {
                "number": best.number,
                "values": dict(zip(names, best.values)),
                "params": best.params,
                "yaml": str(path),
            }
            print(
                f"best: trial {best.number} {dict(zip(names, best.values))}\nretrain it: {command}   "
                f"(or copy {path} to conf/tuned/best.yaml for dvc repro)"
            )
            if self.client:  # its best checkpoint, through the tags _log_best sets below
                print(f"evaluate it: python src/evaluate.py ckpt=runs:/{self.parent_id}")
            self._log_best(best, names, path)
        running = any(t.state == TrialState.RUNNING for t in trials)
        if self.client and not running:
            self.client.set_terminated(self.parent_id, status=status)
        return result

    def _log_best(self, best, names, path: Path) -> None:
        plots = save_plots(self.study, self.sweep_dir / "plots", names)  # beside the study with logger=none too
        if self.client and (sheet := self._prediction_sheet(names)):  # the trials' drawings are in MLflow
            plots.append(sheet)
        if plots:
            print(f"plots: {self.sweep_dir / 'plots'} ({', '.join(p.stem for p in plots)})")
        if not self.client:
            return
        for n, v in zip(names, best.values):
            self.client.log_metric(self.parent_id, f"best/{n}", v)
        for k, v in best.params.items():
            self.client.set_tag(self.parent_id, f"best.{k}", str(v))
        self.client.set_tag(self.parent_id, "best_trial", str(best.number))
        self.client.log_artifact(self.parent_id, str(path))
        for png in plots:
            self.client.log_artifact(self.parent_id, str(png), "plots")

    def _prediction_sheet(self, names: list[str], top: int = 7) -> Path | None:
        """plots/predictions.png: the first val image's ground truth beside the best trials' predictions of it."""
        from masklab.track import report

        done = [t for t in self.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if len(names) > 1:
            done = self.study.best_trials  # the Pareto front
        else:
            done.sort(key=lambda t: t.value, reverse=self.study.direction == optuna.study.StudyDirection.MAXIMIZE)
        done = [t for t in done if "same_as" not in t.user_attrs]  # a repeat has no drawings: its trial's are shown
        rows = [
            {"run": f"trial {t.number}", "run_id": t.user_attrs.get("mlflow_run_id"), names[0]: t.values[0]}
            for t in done[:top]
            if t.user_attrs.get("mlflow_run_id")
        ]
        return report.write_prediction_sheet(self.client, rows, names[0], self.sweep_dir / "plots" / "predictions.png")
