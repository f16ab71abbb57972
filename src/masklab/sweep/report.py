"""What a study leaves behind: MLflow parent/child runs, a summary table, best params, Optuna plots.

One MLflow parent run per study (its id is kept in the study, so resumed sessions and parallel
workers share it); each trial's own run is its child (``mlflow.parentRunId``, set by ``train.py``)
and gets tags ``trial_number``, ``trial_state`` (COMPLETE / PRUNED / FAIL), ``fail_reason`` and
``sampled.<param>``. At the end the parent gets the best value and params, ``tuned/best.yaml``
(a config ``train.py`` loads: ``python src/train.py --config-dir <sweep dir> +tuned=best``; copied to
``conf/tuned/best.yaml`` it feeds the DVC train stage) and the plots.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from pathlib import Path

import optuna
import yaml
from omegaconf import DictConfig
from optuna.trial import TrialState

from masklab import CONFIG_DIR

log = logging.getLogger("masklab.sweep")


class Tracker:
    def __init__(self, cfg: DictConfig, study: optuna.Study, sweep_dir: Path, fixed: list[str]):
        self.cfg, self.study, self.sweep_dir, self.fixed = cfg, study, Path(sweep_dir), list(fixed)
        self.client, self.parent_id = None, None
        if cfg.logger.get("_target_"):
            self._open_parent()

    def _open_parent(self) -> None:
        from mlflow import MlflowClient

        from masklab.track.mlflow_utils import experiment_id

        uri = self.cfg.paths.tracking_uri
        self.client = MlflowClient(uri)
        exp_id = experiment_id(self.client, self.cfg.experiment_name)
        known = self.study.user_attrs.get("mlflow_parent_run_id")
        if known:
            self.parent_id = known
            self.client.update_run(known, status="RUNNING")
            return
        run = self.client.create_run(
            exp_id,
            run_name=f"study-{self.study.study_name}",
            tags={"masklab.role": "study", "study": self.study.study_name},
        )
        self.parent_id = run.info.run_id
        self.study.set_user_attr("mlflow_parent_run_id", self.parent_id)
        sweeper = self.cfg.hydra.sweeper
        for key in ("sampler", "seed", "pruner", "n_trials", "max_failures"):
            self.client.log_param(self.parent_id, f"sweeper.{key}", sweeper.get(key))

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

    def _child(self, trial_id: int) -> str | None:
        return self.study._storage.get_trial(trial_id).user_attrs.get("mlflow_run_id")

    def after_trial(self, trial: optuna.Trial, state: TrialState, reason: str) -> TrialState:
        frozen = self.study._storage.get_trial(trial._trial_id)
        # a PRUNED trial's value is Optuna's last reported pruning signal (maybe -val/loss): its reason says it
        value = frozen.values[0] if frozen.values and state == TrialState.COMPLETE else None
        log.info(
            "trial %d %s%s%s",
            trial.number,
            state.name,
            f" value={value:.4f}" if value is not None else "",
            f" ({reason})" if reason else "",
        )
        run_id = self._child(trial._trial_id)
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
    def finish(self, names: list[str], complete: bool) -> dict:
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
            self.client.set_terminated(self.parent_id, status="FINISHED" if complete else "FAILED")
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


def summary_table(trials, names: list[str]) -> str:
    params = sorted({k for t in trials for k in t.params})
    head = ["trial", "state", *names, "minutes", *params, "reason"]
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        vals = [f"{v:.4f}" for v in t.values] if t.values and t.state == TrialState.COMPLETE else ["-"] * len(names)
        minutes = f"{t.duration.total_seconds() / 60:.1f}" if t.duration else "-"
        said = t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason")
        reason = "; ".join(r for r in (t.user_attrs.get("note"), said) if r)[:70]
        rows.append(
            [str(t.number), t.state.name, *vals, minutes, *[_fmt(t.params.get(p, "-")) for p in params], reason]
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [head, *rows])


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


#: overrides that describe where a trial ran, not what it trained: left out of the winner's config
NOT_PARAMS = ("hydra.", "sweep.", "paths.", "experiment_name", "hparams_search", "run_name", "export.")


def retrain_command(hydra_cfg: DictConfig, sweep_dir: Path, name: str = "best") -> str:
    """The train.py command that retrains the winner: the study's own config (a recipe's ``--config-dir
    experiments --config-name <recipe>`` too: retraining it on conf/config.yaml lost the recipe) plus
    ``tuned/<name>.yaml`` found through the sweep folder."""
    config_name = hydra_cfg.job.get("config_name") or "config"
    given = [str(s.path) for s in hydra_cfg.runtime.get("config_sources") or [] if s.provider == "command-line"]
    if config_name == "config" and not given:
        return f"python src/train.py --config-dir {sweep_dir} +tuned={name}"
    where = f"--config-dir {given[0].removeprefix('file://')} " if given else ""
    return (
        f"python src/train.py {where}--config-name {config_name} 'hydra.searchpath=[file://{sweep_dir}]' +tuned={name}"
    )


def write_best_params(path: Path, best, fixed: list[str], names, command: str) -> Path:
    """The winner as a ``tuned`` config (``# @package _global_``, group choices as ``override /group``)."""
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    overrides = {}
    for line in fixed:
        key, _, raw = line.lstrip("+~").partition("=")
        if not key.startswith(NOT_PARAMS):
            overrides[key] = yaml.safe_load(raw) if raw else None
    overrides.update(best.params)
    defaults, values = [], {}
    for key, v in overrides.items():
        if key in groups:
            defaults.append({f"override /{key}": v})
        else:
            node = values
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = v
    header = (
        f"# @package _global_\n# Best trial {best.number}: {dict(zip(names, best.values))}\n"
        f"# retrain: {command}\n"
        f"# pipeline: copy to conf/tuned/best.yaml (dvc repro's train stage includes it)\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"defaults": defaults, **values} if defaults else values
    path.write_text(header + yaml.safe_dump(body, sort_keys=False))
    return path


def _plot_curves(signal: dict, study: optuna.Study):
    """Optuna's intermediate-values plot, in the units of the metric the trials reported (``signal``:
    the study's ``masklab_pruner`` attribute, ``on`` and ``sign``)."""
    from optuna.visualization import matplotlib as ovm

    ax = ovm.plot_intermediate_values(study)
    pruned = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))}
    for line in ax.get_lines():  # labelled "Trial<number>" by Optuna
        if signal.get("sign", 1) == -1:
            line.set_ydata(-line.get_ydata())
        if int(line.get_label().removeprefix("Trial")) in pruned:
            line.set_linestyle("--")
            line.set_label(f"{line.get_label()} pruned")
    ax.relim()
    ax.autoscale_view()
    if len(ax.get_lines()) >= 2:
        ax.legend(bbox_to_anchor=(1.05, 1), loc="upper left", borderaxespad=0.0, fontsize="small")
    ax.set_title(f"{signal.get('on') or 'reported value'} per epoch of each trial (dashed: pruned)")
    ax.set_xlabel("epoch (0-based; pruned trials stop early)")
    ax.set_ylabel(signal.get("on") or "reported value")
    return ax


def save_plots(study: optuna.Study, out: Path, names: list[str]) -> list[Path]:
    """Optimization history, parameter importances, parallel coordinates (Pareto front for several
    objectives), and every trial's curve of what it reported to the pruner per epoch (where pruned
    trials stopped; a signal reported negated, e.g. val loss in a study that maximises AP, is shown as
    the loss)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out.mkdir(parents=True, exist_ok=True)
    single = len(names) == 1
    plots = (
        {
            "optimization_history": ovm.plot_optimization_history,
            "param_importances": ovm.plot_param_importances,
            "parallel_coordinate": ovm.plot_parallel_coordinate,
        }
        if single
        else {"pareto_front": ovm.plot_pareto_front}
    )
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots["intermediate_values"] = functools.partial(_plot_curves, study.user_attrs.get("masklab_pruner", {}))
    written = []
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            fig.savefig(out / f"{name}.png", dpi=100)
            plt.close(fig)
            written.append(out / f"{name}.png")
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. importances need 2+ trials
            log.info("plot %s skipped: %s", name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return written
