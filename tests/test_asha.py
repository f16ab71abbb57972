"""hydra.sweeper.pruner=asha: rungs, ASHA's promotion rule, and a real study that pauses and resumes trials."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from conftest import ROOT
from masklab import MasklabError
from masklab.sweep.asha import Asha, Config, asha_root, promotion, rungs
from masklab.sweep.schedulers import build_pruner, pruner_spec
from masklab.sweep.storage import INTERRUPTED, WORKER_DIED
from test_sweep import load, run, sweep_cmd

sys.path.insert(0, str(ROOT / "benchmarks"))
from pruning import simulate_asha as simulate  # noqa: E402  (the pruning benchmark's replay of ASHA's rule)


def test_rungs_grow_by_the_reduction_factor_and_end_at_the_last_epoch():
    assert rungs(12) == [2, 6, 12]
    assert rungs(12, min_resource=1, reduction_factor=3) == [1, 3, 9, 12]
    assert rungs(4, 1, 2) == [1, 2, 4]
    assert rungs(2) == [2]  # a trial no longer than the first rung never pauses
    with pytest.raises(MasklabError, match="reduction_factor=1"):
        rungs(12, 2, 1)


def test_asha_kwargs_are_checked_when_the_study_opens():
    assert type(build_pruner(pruner_spec("asha"))[0]).__name__ == "NopPruner"  # the sweeper pauses, not Optuna
    with pytest.raises(MasklabError, match=r"pruner_kwargs for Asha: .*unexpected keyword argument 'eta'"):
        build_pruner(pruner_spec("asha", {"eta": 3}))
    with pytest.raises(MasklabError, match="min_resource=0"):
        build_pruner(pruner_spec("asha", {"min_resource": 0}))


def test_promotion_takes_the_best_waiting_configuration_of_the_highest_rung():
    r = [2, 6, 12]
    a = Config(0, {0: 0.1, 1: 0.5}, paused_at=0)
    b = Config(1, {0: 0.1, 1: 0.3}, paused_at=0)
    assert promotion([a, b], r, 3) is None  # 2 reached rung 0: the top 2 // 3 = 0 go on
    c = Config(2, {0: 0.1, 1: 0.4}, paused_at=0)
    assert promotion([a, b, c], r, 3) == (0, 0)  # top 1 of 3 (0.5)
    a.paused_at = None  # promoted (running on): the next in line is not in the top third
    assert promotion([a, b, c], r, 3) is None
    a.values.update({2: 0.6, 5: 0.7})
    a.paused_at = 1
    d = [Config(n, {1: 0.9, 5: 0.6}, paused_at=1) for n in (3, 4)]
    # rung 1 first: of a (0.7), 3 and 4 (0.6 each) the top 1 is a; ties go to the earlier configuration
    assert promotion([a, b, c, *d], r, 3) == (0, 1)
    a.paused_at = None
    assert promotion([a, b, c, *d], r, 3) is None  # rung 0's top 1 of 5 is 3 (0.9), which waits at rung 1, not 0
    e = Config(5, {0: 0.0, 1: 0.95}, paused_at=0)
    assert promotion([a, b, c, *d, e], r, 3) == (5, 0)  # top 2 of 6 at rung 0: 5 (0.95) and 3


def test_simulate_pauses_every_configuration_and_resumes_only_the_leaders():
    curves = [[0.1, 0.2, 0.3, 0.4], [0.3, 0.5, 0.6, 0.7], [0.0, 0.1], [0.2, 0.3, 0.35, 0.36]]
    # rungs 1, 2, 4 with factor 2: after configurations 0 and 1, config 1 leads rung 0 (top 1 of 2) and goes on to
    # rung 1, where it is alone (top 0 of 1); config 2 starts, then 3; with 4 at rung 0 the top 2 are 1 and 3;
    # 3 reaches rung 1 and is then second of 2 there, so 1 (the top 1 of 2) resumes to the end
    assert simulate(curves, [1, 2, 4], 2) == [
        (0, 0, 1),
        (1, 0, 1),
        (1, 1, 2),
        (2, 0, 1),
        (3, 0, 1),
        (3, 1, 2),
        (1, 2, 4),
    ]
    # a curve shorter than its rung (a failed trial) stops there and never waits
    assert simulate([[0.9], [0.1, 0.2]], [2, 4], 2) == [(0, 0, 1), (1, 0, 2)]


def _paused_then_resumed(fail_reason: str | None):
    """Configurations 0 (0.5) and 1 (0.1) paused at rung 0 of [1, 2, 4]; then 0 resumed, and that trial failed with
    ``fail_reason`` (None: still running). Returns (promotion, study, what it says before the resume)."""
    asha = Asha(min_resource=1, reduction_factor=2)
    asha.start(4, ".", "x", None)
    assert asha.rungs == [1, 2, 4]

    def promoted(study):  # (root, rung it resumes from)
        job = asha.promotion(study.trials, maximize=True)
        return job and (job[1]["asha_root"], job[1]["asha_rung"] - 1)

    study = optuna.create_study(direction="maximize")
    lr = {"lr": optuna.distributions.FloatDistribution(0, 1)}
    for value in (0.5, 0.1):  # trials 0 and 1, each its own configuration
        t = study.ask(lr)
        t.set_user_attr("asha_rung", 0), t.set_user_attr("asha_paused", True)  # a first trial: its own root
        t.report(value, 0)
        study.tell(t, state=TrialState.PRUNED)
    before = promoted(study)
    resumed = study.ask(lr)
    resumed.set_user_attr("asha_root", 0), resumed.set_user_attr("asha_rung", 1)
    resumed.report(0.6, 1)
    if fail_reason:
        resumed.set_user_attr("fail_reason", fail_reason)
        study.tell(resumed, state=TrialState.FAIL)
    return promoted, study, before


def test_a_killed_resume_leaves_its_configuration_waiting_and_a_failed_one_ends_it():
    promoted, study, before = _paused_then_resumed(None)
    assert before == (0, 0) and promoted(study) is None  # 0 leads rung 0; then it runs
    for reason in (WORKER_DIED, INTERRUPTED):  # what a live worker marks a killed trial with; Ctrl-C
        promoted, study, _ = _paused_then_resumed(reason)
        assert promoted(study) == (0, 0)  # resumed again (from its last checkpoint)
    promoted, study, _ = _paused_then_resumed("objective ['val/segm_AP'] is NaN/inf")
    assert promoted(study) is None  # it failed on its own: it ends there


@pytest.mark.slow
def test_an_asha_study_pauses_and_resumes_trials_in_their_own_folder(tmp_path):
    # learning rates spread so their val losses differ (segm AP is ~0 at this size): ASHA ranks on -val/loss
    args = [
        "optimizer.lr=tag(log,interval(0.001,0.05))",
        "schedule.epochs=4",
        "schedule=constant",
        "schedule.warmup_iters=0",
        "hydra.sweeper.sampler=random",
        "hydra.sweeper.pruner=asha",
        "hydra.sweeper.prune_on=val/loss",
        "hydra.sweeper.pruner_kwargs={min_resource:1,reduction_factor:2}",
        "logger=mlflow",
    ]
    proc = run(sweep_cmd(tmp_path, *args, n_trials=4), tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = load(tmp_path)
    trials = sorted(study.trials, key=lambda t: t.number)
    roots = [t.number for t in trials if asha_root(t) == t.number]
    assert len(roots) == 4  # n_trials counts configurations, not the trials that resume them
    # created with its rung in the one write; a promotion also names its configuration's first trial
    assert all(bool(t.user_attrs["asha_rung"]) == ("asha_root" in t.user_attrs) for t in trials)
    sweep = tmp_path / "multirun" / "s" / "s"
    curves = {}
    for root in roots:  # one folder per configuration, its history over every epoch it trained
        rows = list(csv.DictReader((sweep / str(root) / "history.csv").open()))
        assert [int(r["epoch"]) for r in rows] == list(range(len(rows)))
        curves[root] = [-float(r["val/loss"]) for r in rows]
    # what the sweeper did is what ASHA's rule does on these curves, segment for segment
    expected = simulate([curves[r] for r in roots], [1, 2, 4], 2)
    done = [(roots.index(asha_root(t)), min(t.intermediate_values), max(t.intermediate_values) + 1) for t in trials]
    assert done == expected
    assert len(trials) > 4 and {t.number for t in trials} - set(roots) == {
        n for n in range(len(trials)) if n not in roots
    }
    assert not any((sweep / str(t.number)).exists() for t in trials if t.number not in roots)
    for t in trials:
        root = study.trials[asha_root(t)]
        assert t.params == root.params
        # each trial reported exactly its own epochs, the values its configuration's history has
        assert [round(v, 5) for v in t.intermediate_values.values()] == [
            round(curves[root.number][s], 5) for s in t.intermediate_values
        ]
        last = max(t.intermediate_values) + 1
        assert t.state.name == ("COMPLETE" if last == 4 else "PRUNED")
        if t.state.name == "PRUNED":
            assert t.user_attrs["asha_paused"] and f"paused after epoch {last}" in t.user_attrs["prune_reason"]
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert finished  # the leader of rung 1 went on to the last epoch
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("s").experiment_id
    for t in finished:  # its MLflow run is its configuration's: every epoch of every segment
        run_id = t.user_attrs["mlflow_run_id"]
        assert run_id == study.trials[asha_root(t)].user_attrs["mlflow_run_id"]
        assert len(client.get_metric_history(run_id, "val/loss")) == 4
        tags = client.get_run(run_id).data.tags
        assert tags["trial_state"] == "COMPLETE" and "prune_reason" not in tags  # (it said paused until resumed)
    assert len(client.search_runs([exp])) == 1 + 4  # the study's run and one child run per configuration
    out = proc.stdout + proc.stderr
    assert f"resumes trial {asha_root(finished[0])}, epochs 3-4" in out  # the summary table says so
    again = run(sweep_cmd(tmp_path, *args, n_trials=4), tmp_path)  # done: re-running trains nothing more
    assert again.returncode == 0 and len(load(tmp_path).trials) == len(trials), again.stderr[-2000:]


def test_asha_refuses_a_swept_number_of_epochs(tmp_path):
    proc = run(sweep_cmd(tmp_path, "schedule.epochs=choice(2,4)", "hydra.sweeper.pruner=asha"), tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: hydra.sweeper.pruner=asha pauses every trial")


@pytest.mark.slow
def test_asha_with_two_objectives_trains_every_trial_in_full(tmp_path):
    proc = run(
        sweep_cmd(
            tmp_path,
            "optimizer.lr=choice(0.01,0.02)",
            "hydra.sweeper.sampler=nsgaii",
            "hydra.sweeper.objectives=[val/segm_AP,val/loss]",
            "hydra.sweeper.directions=[maximize,minimize]",
            "hydra.sweeper.pruner=asha",
            "hydra.sweeper.pruner_kwargs={min_resource:1,reduction_factor:2}",
            "schedule.epochs=2",
            n_trials=2,
        ),
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [t.state.name for t in load(tmp_path).trials] == ["COMPLETE", "COMPLETE"]  # none paused at epoch 1
    assert "(hydra.sweeper.pruner=asha has no effect)" in proc.stdout + proc.stderr
    rows = (tmp_path / "multirun" / "s" / "s" / "0" / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # both epochs trained


def test_a_shared_checkpoint_dir_holds_a_configuration_s_checkpoints_and_resumes_from_an_fsspec_url(tmp_path):
    import fsspec

    from masklab.track.resume import resume_checkpoint

    asha = Asha(min_resource=1, reduction_factor=2)
    asha.start(4, tmp_path / "sweep", "st", "memory://ckpt")
    assert asha.overrides({"asha_root": 5, "asha_rung": 0}, 5) == [
        "sweep.stop_epoch=1",
        "callbacks.best_checkpoint.dirpath='memory://ckpt/st/5'",
        "callbacks.last_checkpoint.dirpath='memory://ckpt/st/5'",
    ]
    resumed = asha.overrides({"asha_root": 5, "asha_rung": 1}, 7)
    assert resumed[-2:] == ["hydra.sweep.subdir=5", "resume='memory://ckpt/st/5/last.ckpt'"]
    assert resumed[1] == "callbacks.best_checkpoint.dirpath='memory://ckpt/st/5'"  # trial 7 writes where 5 did
    with pytest.raises(MasklabError, match="no such checkpoint file"):
        resume_checkpoint("memory://ckpt/st/5/last.ckpt", tmp_path)
    with fsspec.open("memory://ckpt/st/5/last.ckpt", "wb") as f:
        f.write(b"x")
    assert resume_checkpoint("memory://ckpt/st/5/last.ckpt", tmp_path) == "memory://ckpt/st/5/last.ckpt"
    with pytest.raises(MasklabError, match=r"^resume=nosuch://b/last.ckpt: fsspec cannot open it here"):
        resume_checkpoint("nosuch://b/last.ckpt", tmp_path)  # named by its own key
    asha.start(4, tmp_path / "sweep", "st", f"file://{tmp_path}/ck")  # a shared mount written as a URL
    assert asha.overrides({"asha_root": 5, "asha_rung": 1}, 7)[-1] == f"resume='{tmp_path}/ck/st/5/last.ckpt'"
    asha.start(4, tmp_path / "sweep", "st", "~/ck")  # resume reads what Lightning wrote: ~ is the home folder
    assert asha.overrides({"asha_root": 5, "asha_rung": 1}, 7)[-1] == f"resume='{Path.home()}/ck/st/5/last.ckpt'"
    optuna_way = build_pruner(pruner_spec("median"))[1]  # another pruner: the checkpoints go there too
    optuna_way.start(4, tmp_path / "sweep", "st", "memory://bucket/ck/")
    assert optuna_way.overrides({}, 3) == [
        "callbacks.best_checkpoint.dirpath='memory://bucket/ck/st/3'",
        "callbacks.last_checkpoint.dirpath='memory://bucket/ck/st/3'",
    ]
    # a URL fsspec cannot open here (s3:// without s3fs): refused at start, not five trials failed on it
    with pytest.raises(MasklabError, match=r"checkpoint_dir=nosuch://b/ck: fsspec cannot open it here \(Protocol not"):
        optuna_way.start(4, tmp_path / "sweep", "st", "nosuch://b/ck")
    # without checkpoint_dir the checkpoints stay in the configuration's folder of the sweep (one machine)
    local = Asha(min_resource=1, reduction_factor=2)
    local.start(4, tmp_path / "sweep", "st", None)
    assert (
        local.overrides({"asha_root": 5, "asha_rung": 1}, 7)[-1] == f"resume='{tmp_path}/sweep/5/checkpoints/last.ckpt'"
    )


@pytest.mark.slow
def test_a_checkpoint_dir_given_as_an_fsspec_url_serves_promotions_the_gallery_and_evaluate(tmp_path):
    """``local://`` stands in for ``s3://`` here: an fsspec URL that Lightning writes through fsspec (its ``file://``
    it makes a local path). Its checkpoints went to a folder named ``local:`` in the working directory, every run's
    best_checkpoint tag read ``<cwd>/local:/...``, the gallery did not draw and ``evaluate.py ckpt=runs:/`` refused."""
    import os
    import subprocess

    url = f"local://{tmp_path}/ck"
    args = ["optimizer.lr=tag(log,interval(0.005,0.05))", "schedule.epochs=2", "logger=mlflow", "log_predictions=1",
            "hydra.sweeper.pruner_kwargs={min_resource:1,reduction_factor:2}",
            f"hydra.sweeper.checkpoint_dir={url}"]  # fmt: skip
    proc = run(sweep_cmd(tmp_path, *args, n_trials=2), tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "not drawn" not in out, out[-3000:]
    trials = load(tmp_path).trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED", "COMPLETE"]  # a promotion resumed from the URL
    root = asha_root(trials[2])
    assert {p.name for p in (tmp_path / "ck" / "s" / str(root)).iterdir()} >= {"last.ckpt"}
    tag = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(trials[2].user_attrs["mlflow_run_id"])
    assert tag.data.tags["best_checkpoint"].startswith(f"{url}/s/{root}/best-epoch")
    assert list((tmp_path / "multirun" / "s" / "s" / str(root) / "predictions").glob("*.png"))
    study_run = out.split("python src/evaluate.py ckpt=")[1].split()[0]
    evaluated = subprocess.run(
        [sys.executable, str(ROOT / "src" / "evaluate.py"), f"ckpt={study_run}", f"paths.root_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"},
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert not list(tmp_path.glob("local:*")) and not list(ROOT.glob("local:*"))
