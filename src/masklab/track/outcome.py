"""What a study leaves behind: a summary table, ``tuned/best.yaml`` and the Optuna plots.

``tuned/best.yaml`` is a config ``train.py`` loads (``python src/train.py --config-dir <sweep dir> +tuned=best``;
copied to ``conf/tuned/best.yaml`` it feeds the DVC train stage).
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path

import optuna
import yaml
from omegaconf import DictConfig
from optuna.trial import TrialState

from masklab import CONFIG_DIR, first_line

log = logging.getLogger("masklab.sweep")


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
            log.info("plot %s skipped: %s", name, first_line(exc))
    return written
