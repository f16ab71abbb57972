"""What a trial reports to its pruner: the metric and its sign (hydra.sweeper.prune_on / prune_mode)."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
import torch

from masklab import MasklabError, StudySettingError
from masklab.callbacks.optuna_trial import PruningBridge, pruning_bridge
from masklab.sweep.schedulers import build_pruner, pruner_spec, pruning_signal


def make_pruner(name, kwargs=None, epochs=None):
    return build_pruner(pruner_spec(name, kwargs, epochs))[0]


@pytest.mark.parametrize(
    "metric, mode, direction, sign",
    [
        ("val/segm_AP", None, "maximize", 1),  # the default: the objective itself
        ("val/loss", None, "maximize", -1),  # a loss is lower-is-better: negated for an AP study
        ("val/loss_mask", None, "minimize", 1),
        ("val/bbox_AP50", None, "minimize", -1),  # not a loss: max, against a minimised objective
        ("val/loss", "max", "maximize", 1),  # an explicit mode wins over the name
    ],
)
def test_pruning_signal_sign_follows_metric_and_study_direction(metric, mode, direction, sign):
    assert pruning_signal(metric, mode, direction) == {"on": metric, "sign": sign}


def test_pruning_signal_rejects_a_bad_mode():
    with pytest.raises(MasklabError, match="prune_mode='lower'"):
        pruning_signal("val/loss", "lower", "maximize")


def _trainer(epoch, **metrics):
    return SimpleNamespace(
        sanity_checking=False,
        global_rank=0,
        current_epoch=epoch,
        should_stop=False,
        callback_metrics={k.replace("__", "/"): torch.tensor(v) for k, v in metrics.items()},
    )


def test_bridge_reports_negated_val_loss_and_prunes_the_worse_trial():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    )
    study.set_user_attr("masklab_pruner", pruning_signal("val/loss", None, "maximize"))
    good = study.ask()
    bridge = pruning_bridge(study, good, "val/segm_AP")
    assert (bridge.metric, bridge.sign) == ("val/loss", -1)
    for epoch, loss in enumerate([1.0, 0.5]):
        bridge.on_validation_end(_trainer(epoch, val__loss=loss, val__segm_AP=0.0), None)
    study.tell(good, 0.0)
    assert good.study.trials[0].intermediate_values == {0: -1.0, 1: -0.5}
    bad, trainer = study.ask(), _trainer(0, val__loss=2.0, val__segm_AP=0.0)
    bridge = pruning_bridge(study, bad, "val/segm_AP")
    bridge.on_validation_end(trainer, None)  # loss 2.0 is worse than the finished trial's 1.0 at epoch 0
    assert trainer.should_stop and (bridge.pruned_at, bridge.pruned_value) == (0, 2.0)


def test_bridge_names_the_metrics_when_prune_on_is_not_logged():
    study = optuna.create_study(direction="maximize")
    bridge = PruningBridge(study, study.ask(), "val/los", -1)
    with pytest.raises(StudySettingError, match=r"prune_on='val/los' is not logged.*'val/loss', 'val/segm_AP'"):
        bridge.on_validation_end(_trainer(0, val__loss=1.0, val__segm_AP=0.0), None)
    # an objective validation never logs fails the trial at its first validation, not as "NaN" at its end
    bridge = PruningBridge(study, study.ask(), "val/segm_AP", 1, objectives=["val/segm_AP", "val/latency"])
    with pytest.raises(
        StudySettingError,
        match=r"objectives \['val/latency'\] are not logged by validation; choose from "
        r"\['val/loss', 'val/segm_AP'\]",
    ):
        bridge.on_validation_end(_trainer(0, val__loss=1.0, val__segm_AP=0.0), None)


def _second_trial_pruned_at(pruner: optuna.pruners.BasePruner) -> int | None:
    """The step where the 2nd of two trials (0.05, 0.1, 0.2), trailing the 1st (0.1, 0.3, 0.5), is pruned."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # named: Hyperband puts trials in brackets by a hash of the study name; with "s" trials 0 and 1 share bracket 0
    study = optuna.create_study(study_name="s", direction="maximize", pruner=pruner)
    first = study.ask()
    for step, value in enumerate([0.1, 0.3, 0.5]):
        first.report(value, step)
        assert not first.should_prune()
    study.tell(first, 0.5)
    second = study.ask()
    for step, value in enumerate([0.05, 0.1, 0.2]):
        second.report(value, step)
        if second.should_prune():
            return step
    return None


def test_successive_halving_default_compares_the_second_trial_with_the_first():
    # Optuna's min_resource="auto" records no rung before a trial has completed: the 2nd trial would be
    # promoted alone. masklab's default (min_resource 1) prunes it at step 1 (step 0, the first epoch, is
    # before the first rung), where it trails the 1st.
    assert _second_trial_pruned_at(make_pruner("successive_halving", {"min_resource": "auto"})) is None
    assert _second_trial_pruned_at(make_pruner("successive_halving")) == 1


def test_hyperband_default_knows_the_trials_epochs_and_prunes_from_the_second_trial():
    from omegaconf import OmegaConf

    from masklab.sweep.sweeper import OptunaSweeperBase

    hyperband = "optuna.pruners.HyperbandPruner"
    assert pruner_spec("hyperband", None, epochs=3) == {"_target_": hyperband, "max_resource": 3}
    assert pruner_spec("hyperband", {}, epochs=3) == {"_target_": hyperband}  # given kwargs (Optuna's "auto") stay
    # the sweeper takes the trials' epochs from the config, or the top of a swept schedule.epochs
    sweeper = OptunaSweeperBase(study_name="s", pruner="hyperband")
    sweeper.config = OmegaConf.create({"schedule": {"epochs": 6}})
    assert sweeper._max_epochs({}) == 6
    assert sweeper._max_epochs({"schedule.epochs": optuna.distributions.CategoricalDistribution([4, 12, 8])}) == 12
    assert sweeper._max_epochs({"schedule.epochs": optuna.distributions.IntDistribution(2, 10)}) == 10
    # with "auto" the brackets only exist once a trial has completed: the 1st trial's rungs are never
    # recorded, and the 2nd is promoted alone; knowing max_resource, it is pruned at its first rung (step 1)
    assert _second_trial_pruned_at(make_pruner("hyperband", {})) is None
    assert _second_trial_pruned_at(make_pruner("hyperband", None, epochs=3)) == 1


def test_study_plots_show_each_trials_curve_in_the_metrics_units_with_pruned_ones_dashed(tmp_path):
    from optuna.trial import TrialState

    from masklab.track.outcome import _plot_curves, save_plots

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("masklab_pruner", pruning_signal("val/loss", None, "maximize"))  # reported as -loss
    for losses, state in [
        ([1.0, 0.8, 0.6], TrialState.COMPLETE),
        ([1.2], TrialState.PRUNED),
        ([0.9, 0.7, 0.5], TrialState.COMPLETE),
    ]:
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(0.001, 0.1, log=True)})
        for step, loss in enumerate(losses):
            trial.report(-loss, step)
        study.tell(trial, 0.1 if state == TrialState.COMPLETE else None, state=state)
    ax = _plot_curves(study.user_attrs["masklab_pruner"], study)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["Trial0"].get_ydata()) == [1.0, 0.8, 0.6]  # the loss itself, not what the pruner saw
    assert lines["Trial1 pruned"].get_linestyle() == "--" and lines["Trial2"].get_linestyle() == "-"
    assert ax.get_ylabel() == "val/loss" and ax.get_ylim()[0] <= 0.5 and ax.get_ylim()[1] >= 1.2
    written = {p.name for p in save_plots(study, tmp_path, ["val/segm_AP"])}
    assert "intermediate_values.png" in written and (tmp_path / "intermediate_values.png").stat().st_size > 10_000
    # a study whose trials reported nothing (pruning off and no validation) has no such plot
    quiet = optuna.create_study(direction="maximize")
    quiet.add_trial(
        optuna.trial.create_trial(
            params={"lr": 0.01},
            value=0.2,
            distributions={"lr": optuna.distributions.FloatDistribution(0.001, 0.1, log=True)},
        )
    )
    assert "intermediate_values.png" not in {p.name for p in save_plots(quiet, tmp_path / "q", ["val/segm_AP"])}


def test_percentile_pruner_keeps_only_the_top_quarter_where_the_median_keeps_the_top_half():
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def pruned(name: str) -> bool:
        study = optuna.create_study(
            direction="maximize",
            pruner=make_pruner(
                name,
                {"n_startup_trials": 3, "n_warmup_steps": 0, **({"percentile": 25.0} if name == "percentile" else {})},
            ),
        )
        for value in (0.1, 0.3, 0.5):
            trial = study.ask()
            trial.report(value, 0)
            study.tell(trial, value)
        trial = study.ask()
        trial.report(0.35, 0)  # above the median of 0.1, 0.3, 0.5; below their top quarter (0.4 and up)
        return trial.should_prune()

    assert not pruned("median") and pruned("percentile")
    # its default keeps the top quarter and starts as the median does
    assert make_pruner("percentile")._percentile == 25.0 and make_pruner("percentile")._n_startup_trials == 3
    with pytest.raises(MasklabError, match="pruner_kwargs for PercentilePruner: .*percentile"):
        make_pruner("percentile", {})
