"""The Optuna sweeper end to end: MLflow parent/child runs, best params, resume after a kill, NaN, pruning, workers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import yaml
from PIL import Image

from conftest import OUT_OF_MEMORY, ROOT, TINY, imported_modules, mlflow_store, sigint_as_in_a_terminal
from masklab.sweep.space import parse, to_overrides
from masklab.sweep.storage import open_storage

pytestmark = pytest.mark.slow
SHOW = [o for o in TINY if not o.startswith("logger=")]


def sweep_cmd(tmp_path, *overrides, n_trials=4, name="s"):
    return [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "-m",
        "hydra/sweeper=optuna",
        *SHOW,
        f"paths.root_dir={tmp_path}",
        f"experiment_name={name}",
        f"hydra.sweeper.n_trials={n_trials}",
        "hparams_search=none",
        *overrides,
    ]


def run(cmd, tmp_path, timeout=600, wait=True, env=None, **popen):
    """The sweep's CompletedProcess, or (``wait=False``) its Popen (``popen``: more of its arguments)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store(tmp_path), **(env or {})}
    if not wait:
        return subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **popen
        )
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def journal(tmp_path, name="s"):
    """Study ``name``'s journal file in a sweep run under ``tmp_path``."""
    return tmp_path / "multirun" / name / name / "optuna.journal"


def load(tmp_path, name="s"):
    return optuna.load_study(study_name=name, storage=open_storage(f"journal:{journal(tmp_path, name)}"))


def states(study):
    return sorted((t.number, t.state.name) for t in study.get_trials())


def running_trial(tmp_path, when, timeout=300):
    """The first RUNNING trial of study ``s`` for which ``when(trial)`` holds, once there is one (None after
    ``timeout`` seconds)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:  # the journal file exists a moment before the study is written into it ("Record does not exist")
            trials = load(tmp_path).get_trials() if journal(tmp_path).exists() else []
        except KeyError:
            trials = []
        if (found := next((t for t in trials if t.state.name == "RUNNING" and when(t)), None)) is not None:
            return found
        time.sleep(0.2)
    return None


def test_search_space_grammar_to_optuna():
    dists, fixed = parse(
        {"backbone": "choice(r18, r50)", "optimizer.lr": "0.1"},
        {"nms.rpn_nms_thresh": "interval(0.6, 0.9)"},
        ["optimizer.lr=tag(log, interval(0.001, 0.1))", "schedule.epochs=2", "data.image_size=range(64,129,32)"],
    )
    assert dists["backbone"].choices == ("r18", "r50")
    assert dists["optimizer.lr"].log and dists["optimizer.lr"].low == 0.001  # the command line wins
    assert not dists["nms.rpn_nms_thresh"].log and dists["nms.rpn_nms_thresh"].high == 0.9
    assert (dists["data.image_size"].low, dists["data.image_size"].high, dists["data.image_size"].step) == (64, 128, 32)
    assert fixed == ["schedule.epochs=2"]
    assert to_overrides({"optimizer.lr": 0.0123456789, "backbone": "r18"}) == [
        "optimizer.lr=0.0123456789",
        "backbone=r18",
    ]


@pytest.mark.parametrize(
    "sweep, problem",
    [
        ("optimizer.lr=interval(0.1,0.01)", "`low <= high` must hold"),
        ("optimizer.lr=tag(log,interval(0,0.1))", "`low > 0` must hold for `log=True`"),
        ("data.image_size=range(128,64,32)", "range(128, 64, 32) holds no value"),
        ("data.image_size=range(64,128,0)", "range(64, 128, 0) holds no value"),
    ],
)
def test_a_sweep_range_that_cannot_be_sampled_is_one_line_naming_the_entry(sweep, problem):
    from masklab import MasklabError

    with pytest.raises(MasklabError) as err:
        parse({}, {}, [sweep])
    assert sweep in str(err.value) and problem in str(err.value)


def test_a_storage_proxy_that_does_not_answer_or_has_no_database_is_one_line(monkeypatch):
    pytest.importorskip("grpc", reason='the gRPC proxy\'s client: pip install -e ".[dev,distributed]"')
    from helpers.services import free_port
    from masklab import MasklabError
    from masklab.sweep import storage

    monkeypatch.setattr(storage, "PROXY_WAIT_S", 1.0)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(MasklabError, match=rf"^hydra.sweeper.proxy={address}: no Optuna storage proxy answers there"):
        open_storage("postgresql://ml:secret@127.0.0.1/optuna", proxy=address)
    with pytest.raises(MasklabError, match="needs hydra.sweeper.storage=<the database it serves>"):
        open_storage("journal:/tmp/x.journal", proxy=address)


def test_bad_sampler_kwargs_and_storage_urls_are_one_line():
    import optuna

    from masklab import MasklabError
    from masklab.sweep.schedulers import make_sampler, space_size

    with pytest.raises(
        MasklabError, match=r"^hydra.sweeper.sampler_kwargs for TPESampler: .*unexpected keyword argument 'bogus'"
    ):
        make_sampler("tpe", {"bogus": 1}, 0, {})
    with pytest.raises(MasklabError, match=r"^hydra.sweeper.sampler='tpee': choose one of \['cmaes', 'grid'"):
        make_sampler("tpee", None, 0, {})
    grid = {
        "a": optuna.distributions.CategoricalDistribution([1, 2, 3]),
        "b": optuna.distributions.IntDistribution(0, 2, step=2),
    }
    assert space_size(grid) == 6  # the sweeper lowers n_trials to it
    assert type(make_sampler("grid", None, 0, grid)).__name__ == "GridSampler"
    # workers do not propose a setting another worker is training (Optuna 4's TPE had constant_liar off): the
    # sampler file asks for it, not the installed Optuna's default (5: on, 4: off); kwargs given replace the file's
    assert make_sampler("tpe", None, 3, {})._constant_liar is True
    assert make_sampler("tpe", {"constant_liar": False}, 3, {})._constant_liar is False
    with pytest.raises(
        MasklabError, match=r"^hydra.sweeper.storage=notaurl: Optuna cannot open it \(.*\); give journal:<file>"
    ):
        open_storage("notaurl")
    # the budget's lock would be a file on each machine: n_trials would not hold across them
    with pytest.raises(MasklabError, match=r"^hydra.sweeper.storage=mysql://ml:\*\*\*@db/o: mysql is not supported"):
        open_storage("mysql://ml:secret@db/o")


def test_opening_a_database_retries_once_when_optuna_s_table_stamping_collides(tmp_path, monkeypatch):
    """Optuna's RDBStorage stamps its alembic table on every open; a reader outside masklab's lock (a dashboard, a
    script polling the study) can make that one statement hit a UniqueViolation: the second try finds the tables."""
    import optuna

    from masklab import MasklabError

    class UniqueViolation(Exception):  # psycopg.errors.UniqueViolation, as SQLAlchemy wraps it (by name)
        pass

    real, calls = optuna.storages.RDBStorage, []

    def colliding_once(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise UniqueViolation('duplicate key value violates unique constraint "pg_type_typname_nsp_index"')
        return real(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", colliding_once)
    storage = open_storage(f"sqlite:///{tmp_path}/o.db")
    monkeypatch.undo()
    assert len(calls) == 2 and optuna.create_study(storage=storage, study_name="s").study_name == "s"
    calls.clear()
    monkeypatch.setattr(optuna.storages, "RDBStorage", lambda url, **kw: (calls.append(url), 1 / 0))
    with pytest.raises(MasklabError, match="Optuna cannot open it"):  # anything else: one clear line, no retry
        open_storage(f"sqlite:///{tmp_path}/o.db")
    assert len(calls) == 1


def test_a_module_another_optuna_does_not_have_is_no_reason_to_stop(tmp_path, monkeypatch):
    """The modules imported before the lock are Optuna's lazy imports of today: a version without one still opens."""
    from masklab.sweep import storage

    monkeypatch.setattr(storage, "DB_IMPORTS", ("optuna.storages._no_such_module", *storage.DB_IMPORTS))
    store = storage.Store(f"sqlite:///{tmp_path}/o.db", tmp_path, stale_after_s=60, study_name="s")
    assert store.study.study_name == "s" and "alembic.migration" in sys.modules


def test_default_space_composes_and_is_not_empty():
    from conftest import compose_cfg

    cfg = compose_cfg([])
    dists, _ = parse(cfg.hparams_search, {}, [])
    assert {
        "backbone",
        "anchors",
        "nms",
        "augmentation",
        "schedule",
        "optimizer.lr",
        "data.image_size",
        "nms.box_score_thresh",
    } <= set(dists)
    for key, dist in dists.items():  # every choice of a group is an option that exists
        if key in ("backbone", "anchors", "nms", "augmentation", "schedule"):
            assert all((ROOT / "conf" / key / f"{c}.yaml").is_file() for c in dist.choices), key


@pytest.mark.parametrize(
    "overrides, epochs",
    [
        ([], 6),
        (["data=pennfudan", "~data.epochs", "data.image_size=320"], 10),
        (["data=pennfudan", "~data.epochs", "data.image_size=320", "schedule=piecewise"], 120),
    ],
)
def test_the_default_space_compares_schedules_at_one_length(overrides, epochs):
    """Each schedule's own length (cosine 10, step 12, piecewise 120) made trials of one study 12x apart on any dataset
    without an ``epochs`` of its own (all but shapes): the piecewise ones took 12x as long."""
    from conftest import compose_cfg

    cfg = compose_cfg([*overrides, "hparams_search=default"], tiny=False)
    dists, fixed = parse(cfg.hparams_search, {}, [o for o in overrides if o.startswith("schedule=")])
    assert f"schedule.epochs={epochs}" in fixed and "schedule.epochs" not in dists
    # the length given on the command line is the one every trial trains
    assert "schedule.epochs=30" in parse(cfg.hparams_search, {}, ["schedule.epochs=30"])[1]


def test_tiny_study_parent_child_runs_and_best_params(tmp_path, monkeypatch):
    cmd = sweep_cmd(
        tmp_path, "optimizer.lr=tag(log,interval(0.005,0.05))", "backbone=choice(mobilenet_v3,r18)", "log_predictions=1"
    )
    cmd[1] = str(ROOT / "tests" / "helpers" / "under_lock.py")  # train.py, watched while it holds the storage's lock
    monkeypatch.setenv("MASKLAB_LOCK_LOG", str(tmp_path / "under_lock.json"))
    proc = run(cmd, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # every worker's asks wait while one holds the lock: no import there (MLflow's took 2 s at each worker's start)
    holds = json.loads((tmp_path / "under_lock.json").read_text())
    assert len(holds) >= 5 and not any(holds), holds
    study = load(tmp_path)
    assert [s for _, s in states(study)] == ["COMPLETE"] * 4 and [n for n, _ in states(study)] == [0, 1, 2, 3]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("s")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("masklab.role") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [0, 1, 2, 3]
    for r in children:
        t = study.trials[int(r.data.tags["trial_number"])]
        assert r.data.tags["trial_state"] == "COMPLETE" and r.data.tags["sampled.backbone"] == t.params["backbone"]
        assert float(r.data.params["optimizer.lr"]) == pytest.approx(t.params["optimizer.lr"])
    assert parent.info.status == "FINISHED" and parent.data.tags["best_trial"] == str(study.best_trial.number)
    assert parent.data.metrics["best/val/segm_AP"] == pytest.approx(study.best_value)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)} | {
        a.path for a in client.list_artifacts(parent.info.run_id, "plots")
    }
    assert {"best.yaml", "plots/optimization_history.png", "plots/predictions.png"} <= artifacts
    # the ground truth of the first val image and the 4 trials' predictions of it, best first: 2 rows of 4 cells
    sheet = np.asarray(Image.open(tmp_path / "multirun" / "s" / "s" / "plots" / "predictions.png"))
    own = np.asarray(
        Image.open(tmp_path / "multirun" / "s" / "s" / str(study.best_trial.number) / "predictions" / "val_000.png")
    )
    w = (own.shape[1] - 4) // 2
    assert sheet.shape == (2 * own.shape[0], 4 * (w + 4), 3)  # each cell: its panel under one title strip of 18 px
    assert np.array_equal(sheet[18 : own.shape[0], w + 4 : 2 * w + 4], own[18:, w + 4 :])  # the best trial's, 2nd cell
    best_file = tmp_path / "multirun" / "s" / "s" / "tuned" / "best.yaml"
    assert best_file.read_text().startswith("# @package _global_")
    best = yaml.safe_load(best_file.read_text())
    assert {"override /backbone": study.best_params["backbone"]} in best["defaults"]
    assert best["optimizer"]["lr"] == pytest.approx(study.best_params["optimizer.lr"])
    assert "paths" not in best and "experiment_name" not in best  # where it ran is not part of the winner
    assert "trial" in proc.stdout and "COMPLETE" in proc.stdout  # the summary table
    # each trial's line says how the study stands, as Optuna's own lines do
    said = re.findall(r"trial (\d) COMPLETE value=([\d.]+); best is trial (\d) with value ([\d.]+)", proc.stdout)
    assert [int(n) for n, *_ in said] == [0, 1, 2, 3]
    for i, (_, _, best, value) in enumerate(said):  # the best of trials 0..i (the first of equals), as told then
        first_best = max(range(i + 1), key=lambda n: (study.trials[n].value, -n))
        assert int(best) == first_best and float(value) == pytest.approx(study.trials[first_best].value, abs=5e-5)
    assert int(said[-1][2]) == study.best_trial.number
    # ... and the last line names every picture, the sheet from MLflow's drawings too, no download bars
    assert proc.stdout.strip().splitlines()[-1].endswith("intermediate_values, predictions)")
    assert "Downloading artifacts" not in proc.stdout + proc.stderr
    # the winner's checkpoint, evaluated through the study's run as the summary says
    from masklab.eval.checkpoint import checkpoint_path

    assert f"evaluate it: python src/evaluate.py ckpt=runs:/{parent.info.run_id}" in proc.stdout
    ckpt = checkpoint_path(f"runs:/{parent.info.run_id}", f"sqlite:///{tmp_path}/mlflow.db")
    assert Path(ckpt).parent == tmp_path / "multirun" / "s" / "s" / str(study.best_trial.number) / "checkpoints"
    # the YAML is a config train.py loads: the winner's choices compose
    show = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "--config-dir",
            str(tmp_path / "multirun" / "s" / "s"),
            "+tuned=best",
            "--cfg",
            "job",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert show.returncode == 0, show.stderr
    shown = yaml.safe_load(show.stdout)
    assert shown["optimizer"]["lr"] == pytest.approx(study.best_params["optimizer.lr"])
    assert (
        shown["backbone"]["arch"]
        == {"r18": "resnet18", "mobilenet_v3": "mobilenet_v3_large"}[study.best_params["backbone"]]
    )


def test_a_repeated_setting_is_not_trained_again_and_a_done_space_ends_the_study(tmp_path):
    # TPE's random start-up (seed 0) drew the second of 3 learning rates twice in 3 trials and never the third
    cmd = sweep_cmd(tmp_path, "optimizer.lr=choice(0.01,0.02,0.03)", "hydra.sweeper.seed=0", n_trials=3)
    proc = run(cmd, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study, sweep_dir = load(tmp_path), tmp_path / "multirun" / "s" / "s"
    trained = [t for t in study.trials if "same_as" not in t.user_attrs]
    repeats = [t for t in study.trials if "same_as" in t.user_attrs]
    assert sorted(t.params["optimizer.lr"] for t in trained) == [0.01, 0.02, 0.03] and repeats
    assert all((sweep_dir / str(t.number) / "checkpoints").is_dir() for t in trained)
    for t in repeats:
        earlier = study.trials[t.user_attrs["same_as"]]
        assert t.state.name == "COMPLETE" and t.params == earlier.params and t.value == earlier.value
        assert not (sweep_dir / str(t.number)).exists()
    said = proc.stdout + proc.stderr
    assert f"same parameters as trial {repeats[0].user_attrs['same_as']}: its value, not trained again" in said
    # one MLflow child run per trial still: a repeat's has its trial's params and final metrics, tagged same_as
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = {
        r.data.tags.get("trial_number"): r
        for r in client.search_runs([client.get_experiment_by_name("s").experiment_id])
        if r.data.tags.get("masklab.role") != "study"
    }
    assert sorted(runs, key=int) == [str(t.number) for t in study.trials]
    for t in repeats:
        copy, source = runs[str(t.number)], runs[str(t.user_attrs["same_as"])]
        assert copy.data.tags["same_as"] == str(t.user_attrs["same_as"]) and copy.data.tags["trial_state"] == "COMPLETE"
        assert copy.data.params == source.data.params
        assert {k: repr(v) for k, v in copy.data.metrics.items()} == {
            k: repr(v) for k, v in source.data.metrics.items()
        }  # NaN too
        assert copy.data.tags["mlflow.parentRunId"] == source.data.tags["mlflow.parentRunId"]
    assert "all 3 settings of the space have a COMPLETE trial; stopping before n_trials=3" not in said  # 3 trained
    # more trials asked of a space that has no setting left: none runs, and the line says why
    again = run([*cmd, "hydra.sweeper.n_trials=5"], tmp_path)
    assert again.returncode == 0 and len(load(tmp_path).trials) == len(study.trials)
    assert (
        "all 3 settings of the space have a COMPLETE trial; stopping before n_trials=5" in again.stdout + again.stderr
    )
    assert "raise hydra.sweeper.n_trials" not in again.stdout + again.stderr
    # a session with another fixed setting (another machine's command line, a resume with other settings) is told
    other = run([*cmd, "data.train.num_images=3"], tmp_path)
    assert other.returncode == 0 and (
        f"study 's': trial {study.trials[-1].number} ran with other fixed settings (data.train.num_images=4; here: "
        "data.train.num_images=3): the study ranks them together" in other.stdout + other.stderr
    ), other.stdout[-3000:] + other.stderr[-3000:]
    assert "other fixed settings" not in said + again.stdout + again.stderr
    # and one pruned another way (asha's paused configurations would wait for good): said too, once trials exist
    unpruned = run([*cmd, "hydra.sweeper.pruner=none"], tmp_path)
    assert unpruned.returncode == 0 and (
        "study 's': its trials were pruned by Asha(min_resource=2, reduction_factor=3) on val/segm_AP; this session "
        "prunes by NopPruner() on val/segm_AP" in unpruned.stdout + unpruned.stderr
    ), unpruned.stderr[-3000:]
    assert "were pruned by" not in said + again.stdout + again.stderr + other.stdout + other.stderr


def test_two_objectives_with_nsga2_complete_and_leave_a_pareto_front(tmp_path):
    # every trial failed with Optuna's "Trial.report is not supported for multi-objective optimization" before
    proc = run(
        sweep_cmd(
            tmp_path,
            "optimizer.lr=choice(0.01,0.02)",
            "hydra.sweeper.sampler=nsgaii",
            "hydra.sweeper.objectives=[val/segm_AP,val/loss]",
            "hydra.sweeper.directions=[maximize,minimize]",
            n_trials=2,
        ),
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = load(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"] and all(
        len(t.values) == 2 for t in study.trials
    )
    assert study.trials[0].values[1] == pytest.approx(study.trials[0].user_attrs["metrics"]["val/loss"])
    assert (
        "Optuna prunes single-objective studies only" in proc.stdout + proc.stderr
    )  # the default pruner (asha) is off
    sweep_dir = tmp_path / "multirun" / "s" / "s"
    assert (sweep_dir / "plots" / "pareto_front.png").is_file() and (sweep_dir / "tuned" / "best.yaml").is_file()


def test_cma_es_sampler_runs_past_its_first_trial_optimising_voc_map50(tmp_path):
    # CmaEsSampler samples the first trial independently and imports the cmaes package from the second on:
    # without it (not an Optuna requirement) the study died there with a ModuleNotFoundError traceback.
    # The study optimises VOC mAP@0.5 (what the seed studies reported): validation logs it, the trials return it.
    proc = run(
        sweep_cmd(
            tmp_path,
            "optimizer.lr=tag(log,interval(0.005,0.05))",
            "nms.box_score_thresh=interval(0.05,0.5)",
            "hydra.sweeper.sampler=cmaes",
            "optimized_metric=val/voc_mAP50",
            n_trials=3,
        ),
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = load(tmp_path)
    assert [s for _, s in states(study)] == ["COMPLETE"] * 3
    assert study.user_attrs["masklab_pruner"]["on"] == "val/voc_mAP50"  # the pruning signal follows it
    for t in study.trials:  # one epoch: the best checkpoint's value is the last validation's
        assert t.value == pytest.approx(t.user_attrs["metrics"]["val/voc_mAP50"])


def test_killed_sweep_resumes_with_the_killed_trial_failed(tmp_path):
    # pruner=none: every trial runs to its end whatever the default pruner (asha would pause them at epoch 2)
    cmd = sweep_cmd(
        tmp_path,
        "optimizer.lr=tag(log,interval(0.005,0.05))",
        "schedule.epochs=3",
        "hydra.sweeper.pruner=none",
        n_trials=3,
    )
    proc = run(cmd, tmp_path, wait=False)
    second = running_trial(tmp_path, lambda t: t.number >= 1 and "mlflow_run_id" in t.user_attrs)  # kill it
    killed = second.number if second else None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = states(load(tmp_path))
    assert killed is not None and before[-1] == (killed, "RUNNING")
    assert all(s == "COMPLETE" for _, s in before[:-1])
    again = run(cmd, tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    study = load(tmp_path)
    after = states(study)
    assert after[: len(before) - 1] == before[:-1]  # finished trials stay
    assert dict(after)[killed] == "FAIL" and "worker died" in study.trials[killed].user_attrs["fail_reason"]
    assert [s for _, s in after].count("COMPLETE") == 3 and len(after) == 4  # n_trials finished, the killed one extra
    # the resumed session's sampler drew afresh: seeded as the first, it proposed trial 0's learning rate again
    assert len({t.params["optimizer.lr"] for t in study.trials}) == 4 and study.user_attrs["masklab_sessions"] == 2
    from masklab.paths import hostname

    assert f"trial {killed} (on {hostname()}) was left RUNNING" in again.stdout + again.stderr  # which machine died
    # its MLflow run ended FAILED and says why; the study has one parent run, FINISHED like the other trials' runs
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    dead = client.get_run(study.trials[killed].user_attrs["mlflow_run_id"])
    assert dead.info.status == "FAILED" and dead.data.tags["trial_state"] == "FAIL"
    assert "worker died" in dead.data.tags["fail_reason"] and dead.data.tags["host"] == hostname()
    assert len([r for r in runs if r.data.tags.get("masklab.role") == "study"]) == 1 and len(runs) == 1 + 4
    assert {r.info.status for r in runs if r.info.run_id != dead.info.run_id} == {"FINISHED"}
    done = run(cmd, tmp_path)  # the study is full: nothing runs, and it says so instead of only printing the table
    assert done.returncode == 0 and states(load(tmp_path)) == after
    assert "already has its n_trials=3 trials: none run; raise hydra.sweeper.n_trials" in done.stdout + done.stderr


@pytest.mark.parametrize(  # Ctrl-C; a cluster's stop, which SLURM sends to every process (DataLoader workers too)
    "sig, status, workers", [(signal.SIGINT, 130, 0), (signal.SIGTERM, 143, 0), (signal.SIGTERM, 143, 1)]
)
def test_an_interrupt_fails_the_trial_it_stopped_ends_the_study_run_killed_and_the_same_command_goes_on(
    tmp_path, sig, status, workers
):
    from masklab.sweep.storage import INTERRUPTED

    cmd = sweep_cmd(tmp_path, "optimizer.lr=tag(log,interval(0.005,0.05))", "schedule.epochs=4",
                    "data.train.num_images=16", "hydra.sweeper.pruner=none", f"num_workers={workers}",
                    n_trials=2)  # fmt: skip
    proc = run(cmd, tmp_path, wait=False, preexec_fn=sigint_as_in_a_terminal)
    stopped = running_trial(tmp_path, lambda t: t.intermediate_values)  # interrupted in its fit
    assert stopped is not None
    os.killpg(proc.pid, sig)  # Ctrl-C: a terminal signals its foreground process group
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == status, out[-3000:]
    assert f"study 's' interrupted at trial {stopped.number} (now FAIL): run the same command to go on" in out
    trial = load(tmp_path).trials[stopped.number]
    assert trial.state.name == "FAIL" and trial.user_attrs["fail_reason"] == INTERRUPTED
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_ = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run_.info.status == "FAILED" and run_.data.tags["fail_reason"] == INTERRUPTED
    parent = client.get_run(run_.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED"
    if not workers:  # every case leaves the same state (asserted above): going on from it is run once, in the last
        return
    again = run(cmd, tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert [t.state.name for t in load(tmp_path).trials].count("COMPLETE") == 2
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"  # the same study run, reopened


def test_sigterm_while_waiting_for_another_machines_trial_exits_143_and_says_how_to_go_on(tmp_path, monkeypatch):
    """A cluster stops a worker outside training (here: waiting for machine b's trial), where SIGTERM killed it."""
    from masklab.sweep.storage import Store

    monkeypatch.setenv("MASKLAB_HOSTNAME", "b")
    Store(f"journal:{journal(tmp_path)}", tmp_path / "b", stale_after_s=120, study_name="s", direction="maximize").ask()
    cmd = sweep_cmd(tmp_path, "optimizer.lr=tag(log,interval(0.005,0.05))", "hydra.sweeper.pruner=none", n_trials=1)
    proc = run(cmd, tmp_path, wait=False, env={"MASKLAB_HOSTNAME": "a"})
    said = []
    for line in proc.stdout:  # the worker waits until b's trial ends (120 s without a heartbeat)
        said.append(line)
        if "still run; waiting for them to end" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out = "".join(said) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 143, out[-3000:]
    assert "study 's' interrupted: run the same command to go on (finished trials are kept)" in out
    assert [t.state.name for t in load(tmp_path).trials] == ["RUNNING"]  # b's trial is b's


def test_a_trial_another_worker_failed_while_it_ran_is_dropped_and_the_study_goes_on(tmp_path, monkeypatch):
    """A machine suspended or cut off from the database for longer than stale_after_s comes back to find that
    another worker failed its trial: it says so and goes on (telling the trial raised 'Cannot tell a FAIL trial')."""
    from masklab.sweep.storage import WORKER_DIED, Store

    cmd = sweep_cmd(tmp_path, "optimizer.lr=tag(log,interval(0.005,0.05))", "schedule.epochs=4",
                    "data.train.num_images=16", "hydra.sweeper.pruner=none", n_trials=2)  # fmt: skip
    proc = run(cmd, tmp_path, wait=False, env={"MASKLAB_HOSTNAME": "a"})
    victim = running_trial(tmp_path, lambda t: t.intermediate_values)  # in its fit
    assert victim is not None
    monkeypatch.setenv("MASKLAB_HOSTNAME", "b")  # a worker on another machine, which has not heard from "a" for long
    spec = f"journal:{journal(tmp_path)}"
    other = Store(spec, tmp_path / "b", stale_after_s=0.5, study_name="s", direction="maximize")
    assert [t.number for t in other.fail_dead() if t.state.name == "FAIL"] == [victim.number]
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    assert f"trial {victim.number} was marked FAIL by another worker while it ran here ({WORKER_DIED}" in out
    trials = load(tmp_path).trials
    assert trials[victim.number].user_attrs["fail_reason"] == WORKER_DIED
    assert [t.state.name for t in trials].count("COMPLETE") == 2  # n_trials met without it


def test_a_tell_the_database_committed_but_did_not_confirm_is_not_blamed_on_another_worker(tmp_path, monkeypatch,
                                                                                           caplog):  # fmt: skip
    """The connection drops after the database commits a tell and before it answers: the retry finds the trial
    finished by this worker's own tell and reports it as it is, not as 'marked by another worker, result dropped'."""
    import types

    import sqlalchemy.exc

    from masklab.sweep import sweeper as sw
    from masklab.sweep.storage import Store

    store = Store(f"journal:{tmp_path}/j", tmp_path, 5, 0.1, study_name="s", direction="maximize")
    trial, real_tell, cut = store.trial(store.ask(), {}), store.tell, []

    def tell_then_cut(*args, **kwargs):
        real_tell(*args, **kwargs)
        if not cut:
            cut.append(True)
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, OSError("server closed the connection unexpectedly"))

    monkeypatch.setattr(store, "tell", tell_then_cut)
    after = []
    tracker = types.SimpleNamespace(after_trial=lambda trial, state, reason: after.append((state.name, reason)))
    session = types.SimpleNamespace(store=store, tracker=tracker, names=["val/segm_AP"])
    with caplog.at_level("INFO", logger="masklab.sweep"):
        store.patiently(lambda: object.__new__(sw.OptunaSweeperBase)._tell(session, trial, None, 0.5))
    assert cut and after == [("COMPLETE", "")] and store.frozen(trial).value == 0.5 and store.current is None
    assert "server closed the connection" in caplog.text and "the study's database answers again" in caplog.text
    assert "another worker" not in caplog.text


def test_nan_trial_fails_and_the_study_finishes(tmp_path):
    # lr 1e6 diverges at once (non-finite loss): with seed 0 random sampling draws it among the good ones
    proc = run(
        sweep_cmd(
            tmp_path,
            "optimizer.lr=choice(0.01,0.02,1000000.0)",
            "hydra.sweeper.sampler=random",
            "hydra.sweeper.seed=0",
            n_trials=2,
        ),
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = load(tmp_path)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed and all(t.params["optimizer.lr"] == 1e6 for t in failed)
    assert all("non-finite" in t.user_attrs["fail_reason"] for t in failed)
    trained = [t for t in study.trials if t.state.name == "COMPLETE" and "same_as" not in t.user_attrs]
    assert sorted(t.params["optimizer.lr"] for t in trained) == [0.01, 0.02]  # n_trials=2 trained, the study finished


def test_too_many_failures_stop_the_study_with_one_line(tmp_path):
    proc = run(
        sweep_cmd(tmp_path, "optimizer.lr=choice(1000000.0)", "hydra.sweeper.max_failures=2", n_trials=3), tmp_path
    )
    assert proc.returncode == 1
    assert "error: study 's' stopped: 2 failed trials" in proc.stderr and "Traceback" not in proc.stderr
    assert [s for _, s in states(load(tmp_path))] == ["FAIL", "FAIL"]


def test_a_study_setting_no_trial_can_meet_stops_the_study_at_the_first_trial(tmp_path):
    # a misspelt prune_on fails every trial the same way: it used to spend an epoch on each until max_failures
    proc = run(
        sweep_cmd(
            tmp_path,
            "optimizer.lr=choice(0.01,0.02)",
            "hydra.sweeper.prune_on=val/los",
            "schedule.epochs=2",
            n_trials=3,
        ),
        tmp_path,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: study 's' stopped at trial 0: hydra.sweeper.prune_on='val/los' is not logged by "
        "validation; choose one of ['val/bbox_AP'"
    ), last
    assert states(load(tmp_path)) == [(0, "FAIL")]


@pytest.mark.parametrize(
    "override, said",
    [
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0: must be at least 1"),
        ("hydra.sweeper.max_failures=0", "hydra.sweeper.max_failures=0: must be at least 1"),
        ("hydra.sweeper.duplicates=skip", "hydra.sweeper.duplicates=skip: choose reuse or train"),
        ("hydra.sweeper.prune_mode=up", "hydra.sweeper.prune_mode='up': choose min or max (how val/segm_AP improves)"),
        ("hydra.sweeper.storage=mysql://db/o", "hydra.sweeper.storage=mysql://db/o: mysql is not supported"),  # last
    ],
)
def test_a_wrong_sweep_setting_is_one_line_before_torch_is_imported(tmp_path, override, said):
    # n_trials=0 ran nothing and printed an empty table with exit 0; each took 6-7 s to say, importing Lightning
    proc = run(sweep_cmd(tmp_path, "optimizer.lr=choice(0.01,0.02)", override), tmp_path,
               env={"PYTHONPROFILEIMPORTTIME": "1"})  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {said}")
    imported, _ = imported_modules(proc.stderr)
    assert "hydra" in imported and not imported & {"torch", "lightning"}  # the trial imports them, if any runs
    assert not journal(tmp_path).exists()


def test_a_study_resumed_with_another_objective_or_kind_of_distribution_is_one_line_before_any_trial(tmp_path):
    """A command line changed on a resume, or on another machine: another objective or direction was taken silently
    (Optuna keeps a study's first direction: a study minimizing what it had maximized picked its best the old way),
    and a parameter drawn from another kind of distribution (Optuna cannot mix kinds or choices in one study) was a
    traceback with a trial left RUNNING. Both are refused before any trial, in one line; an interval may widen."""
    path = journal(tmp_path)
    path.parent.mkdir(parents=True)
    study = optuna.create_study(study_name="s", storage=open_storage(f"journal:{path}"), direction="maximize")
    study.set_user_attr("masklab_pruner", {"objectives": ["val/segm_AP"]})  # as the sweeper keeps them
    lr = {"optimizer.lr": optuna.distributions.FloatDistribution(0.001, 0.1, log=True)}
    trial = study.ask(lr)
    study.tell(trial, 0.5)
    promoted = {"asha_root": 0, "asha_rung": 1}  # its resume by ASHA: not a configuration of its own
    study.add_trial(optuna.trial.create_trial(params=trial.params, distributions=lr, value=0.6, user_attrs=promoted))
    same = "optimizer.lr=tag(log,interval(0.001,0.1))"
    for overrides, said in [
        (["optimizer.lr=choice(0.01,0.02)"], ": optimizer.lr is choice(0.01, 0.02) here, but trial 0 drew it from "
         "tag(log, interval(0.001, 0.1)), and Optuna cannot mix the two in one study: keep its kind and choices (an "
         "interval's bounds may change), or start another study (hydra.sweeper.study_name=<new name>)"),
        ([same, "optimized_mode=min"], " is to maximize val/segm_AP, and this session to minimize val/segm_AP: their "
         "values would not rank together; keep the study's objective, or start another study"),
        ([same, "optimized_metric=val/bbox_AP"], " is to maximize val/segm_AP, and this session to maximize "
         "val/bbox_AP"),
    ]:  # fmt: skip
        proc = run(sweep_cmd(tmp_path, *overrides), tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: study 's'{said}"), overrides
        imported, _ = imported_modules(proc.stderr)
        assert not imported & {"torch", "lightning"} and len(load(tmp_path).trials) == 2
    # a wider interval goes on, pruned now by median: one configuration so far, so n_trials=2 trains one more
    wider = sweep_cmd(tmp_path, "optimizer.lr=tag(log,interval(0.0001,0.5))", "hydra.sweeper.pruner=median", n_trials=2)
    proc = run(wider, tmp_path)
    assert proc.returncode == 0 and states(load(tmp_path)) == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]


def test_a_trial_failing_while_hydra_builds_its_data_keeps_the_one_line_reason(tmp_path):
    # the datamodule's MasklabError reaches the sweeper wrapped by hydra's instantiate ("Error in call to target ...")
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "-m",
        "hydra/sweeper=optuna",
        "data=coco",
        "logger=none",
        f"paths.root_dir={tmp_path}",
        "experiment_name=s",
        "hparams_search=none",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.max_failures=1",
        "optimizer.lr=choice(0.01,0.02)",
        "schedule.epochs=1",
    ]  # no prepared coco under tmp_path (epochs=auto would need its statistics first)
    proc = run(cmd, tmp_path)
    assert proc.returncode == 1 and "error: study 's' stopped: 1 failed trials" in proc.stderr
    (trial,) = load(tmp_path).trials
    assert trial.user_attrs["fail_reason"].endswith(
        "annotations/train.json not found: run `python src/prepare.py "
        f"data=<this data option>` first (the canonical dataset goes to "
        f"{tmp_path}/data/prepared/coco)"
    )


def test_bad_trials_are_pruned_and_tagged(tmp_path):
    # lr 0 cannot learn: its val loss stays at the start while lr 0.02 trials go down. The study maximises
    # segm AP (the default objective, ~0 for every trial of this size) and prunes on val/loss, lower is better
    # (box_score_thresh does not change the loss: it only makes 3 copies of each learning rate for the grid)
    proc = run(
        sweep_cmd(
            tmp_path,
            "optimizer.lr=choice(0.02,0.0)",
            "nms.box_score_thresh=choice(0.05,0.06,0.07)",
            "hydra.sweeper.sampler=grid",
            "schedule=constant",
            "schedule.warmup_iters=0",
            "hydra.sweeper.seed=0",
            "hydra.sweeper.pruner=median",
            "hydra.sweeper.prune_on=val/loss",
            "schedule.epochs=3",
            "data.train.num_images=8",
            "hydra.sweeper.pruner_kwargs={n_startup_trials:1,n_warmup_steps:1}",
            n_trials=6,
        ),
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = load(tmp_path)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    stuck = [t for t in pruned if t.params["optimizer.lr"] == 0.0]
    # the median rule may also catch a learning trial that is briefly behind; the ones that cannot learn dominate
    assert stuck and len(stuck) >= len(pruned) - len(stuck)
    assert all(len(t.intermediate_values) < 3 for t in pruned)  # stopped before the last epoch
    # what was reported is -val/loss (the study maximises): the trial's own history says so
    t = study.trials[0]
    history = (tmp_path / "multirun" / "s" / "s" / str(t.number) / "history.csv").read_text().splitlines()
    col = history[0].split(",").index("val/loss")
    losses = [float(r.split(",")[col]) for r in history[1:] if r.split(",")[col]]
    assert [round(-v, 5) for _, v in sorted(t.intermediate_values.items())] == [round(v, 5) for v in losses]
    assert all("(val/loss " in t.user_attrs["prune_reason"] for t in pruned)
    out = proc.stdout + proc.stderr
    assert all(
        f"PRUNED (pruned by the MedianPruner after epoch {max(t.intermediate_values)} (val/loss "
        f"{-t.intermediate_values[max(t.intermediate_values)]:.4g})" in out
        for t in pruned
    )
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id], "tags.trial_state = 'PRUNED'")
    assert sorted(int(r.data.tags["trial_number"]) for r in runs) == sorted(t.number for t in pruned)
    assert all(r.info.status == "FINISHED" for r in runs)  # pruned is not shown as a failure
    (parent,) = client.search_runs([client.get_experiment_by_name("s").experiment_id], "tags.`masklab.role` = 'study'")
    assert "plots/intermediate_values.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert (tmp_path / "multirun" / "s" / "s" / "plots" / "intermediate_values.png").is_file()  # and beside the study


def test_a_sweep_refuses_multi_process_trials_and_says_how_to_use_several_gpus(tmp_path):
    from conftest import compose_cfg
    from masklab import MasklabError
    from masklab.model.trainer import refuse_multiprocess as _refuse_multiprocess_trials

    with pytest.raises(MasklabError, match=r"trainer.strategy=ddp with devices=auto.*one per GPU on the same study"):
        _refuse_multiprocess_trials(compose_cfg(["trainer=ddp"]), {})
    with pytest.raises(MasklabError, match=r"trainer=choice\(gpu,ddp\) in a sweep"):
        _refuse_multiprocess_trials(
            compose_cfg([]), {"trainer": optuna.distributions.CategoricalDistribution(["gpu", "ddp"])}
        )
    for ok in (["trainer=gpu"], ["trainer=ddp", "trainer.devices=1"], []):  # one process per trial
        _refuse_multiprocess_trials(compose_cfg(ok), {})
    # from the command line: one line, exit 1, before any trial (ranks of different trials trained as one before)
    proc = run(
        sweep_cmd(
            tmp_path,
            "optimizer.lr=choice(0.02,0.0)",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            n_trials=2,
        ),
        tmp_path,
    )
    assert proc.returncode == 1 and "error: trainer.strategy=ddp with devices=2" in proc.stderr
    assert "Traceback" not in proc.stderr and not journal(tmp_path).exists()


def test_a_gpu_sweep_on_a_machine_without_one_stops_before_any_trial(tmp_path):
    # every trial failed the same way ("No supported gpu backend found!") until max_failures
    import torch

    from conftest import compose_cfg
    from masklab import MasklabError
    from masklab.model.trainer import refuse_gpu_trials_without_gpu as _refuse_gpu_trials_without_gpu

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(
        MasklabError, match=r"^trainer.accelerator=gpu: no CUDA GPU is visible here, so no trial could run"
    ):
        _refuse_gpu_trials_without_gpu(compose_cfg(["trainer=gpu"]), {})
    _refuse_gpu_trials_without_gpu(compose_cfg([]), {})
    _refuse_gpu_trials_without_gpu(
        compose_cfg(["trainer=gpu"]), {"trainer": optuna.distributions.CategoricalDistribution(["cpu", "gpu"])}
    )
    proc = run(sweep_cmd(tmp_path, "optimizer.lr=choice(0.02,0.01)", "trainer=gpu", n_trials=2), tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1].startswith("error: trainer.accelerator=gpu: no CUDA GPU is visible here")
    )
    assert not journal(tmp_path).exists()


def test_a_failed_trial_s_tensors_are_freed_before_the_next_trial(monkeypatch):
    # the sweeper freed memory while it still held the trial's exception, whose traceback frames hold the model
    # and the activations: on an H100 capped at 4 GiB a trial out of memory kept 3.9 GiB allocated after gc and
    # empty_cache (0 now: benchmarks/RESULTS_NOTES.md). Here a tensor in the failing frame stands for them.
    import types
    import weakref

    import torch
    from hydra.core.utils import JobReturn, JobStatus

    from masklab.sweep import sweeper as sw
    from masklab.sweep.schedulers import Scheduler

    held = {}

    def training_step():
        activations = torch.zeros(1000)
        held["activations"] = weakref.ref(activations)
        raise torch.OutOfMemoryError(OUT_OF_MEMORY)

    class Launcher:  # what Hydra's run_job does with a job's exception
        def launch(self, overrides, initial_job_idx):
            ret = JobReturn(status=JobStatus.FAILED)
            try:
                training_step()
            except Exception as exc:
                ret._return_value = exc
            return [ret]

    freed, free_memory = [], sw.free_memory

    def spy():
        free_memory()
        freed.append(held["activations"]() is None)

    monkeypatch.setattr(sw, "free_memory", spy)
    sweeper = object.__new__(sw.OptunaSweeperBase)
    sweeper.launcher, sweeper.study_name, sweeper.validate_batch_is_legal = Launcher(), "s", lambda batch: None
    sweeper.proxy, sweeper._tell = None, lambda s, trial, error, value: sw.user_message(error)
    sweeper.stale_after_s, sweeper.heartbeat_s = 120.0, 10.0
    store = types.SimpleNamespace(trial_id=lambda trial: 0, patiently=lambda call: call())
    session = types.SimpleNamespace(fixed=[], spec="journal:x", store=store, scheduler=Scheduler(),
                                    tracker=types.SimpleNamespace(parent_id=None))  # fmt: skip
    reason = sweeper._run(session, types.SimpleNamespace(params={}, number=0, user_attrs={}))
    assert freed == [True]
    assert reason == (
        "CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 79.18 GiB of which "
        "74.61 GiB is free. Including non-PyTorch memory, this process has 4.56 GiB memory in use: lower "
        "batch_size or the image size (data.image_size), or train in mixed precision (trainer.precision=16-mixed)"
    )


def test_one_outage_is_waited_for_once_in_a_process_the_trial_s_wait_and_then_its_worker_s():
    """A trial ending while its database is down waits up to stale_after_s to leave its metrics; its worker, telling
    it right after in the same process, counts from the same start: it says so at once instead of waiting again."""
    import sqlalchemy.exc

    from masklab import MasklabError
    from masklab.sweep.storage import patiently

    calls = []

    def down():
        calls.append(time.monotonic())
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    def tries(wait_s: float = 1.0) -> int:
        calls.clear()
        with pytest.raises(MasklabError, match=r"postgresql://ml:\*\*\*@db/s: the database has not answered for"):
            patiently(down, "postgresql://ml:pw@db/s", wait_s, every_s=0.2)
        return len(calls)

    assert tries() >= 5  # the trial: every 0.2 s for 1 s
    assert tries() == 1  # its worker, right after: the same outage, already waited for
    assert patiently(lambda: "back", "postgresql://ml:pw@db/s", 1.0, 0.2) == "back"
    assert tries() >= 5  # a later outage: waited for again


def test_which_running_trials_count_as_left_by_a_dead_worker(tmp_path, monkeypatch):
    from masklab.paths import hostname
    from masklab.sweep.storage import NO_OWNER, WORKER_DIED, Store, _process_start

    store = Store(f"journal:{tmp_path}/j", tmp_path, stale_after_s=60, study_name="s")

    def running(**owner):
        trial = store.study.ask()
        if owner:
            trial.set_user_attr("masklab_owner", {k: v for k, v in owner.items() if k != "beat"})
            trial.set_user_attr("masklab_heartbeat", owner.get("beat", time.time()))
        return store.frozen(trial)

    me, here = os.getpid(), hostname()
    assert store.dead(mine := running(host=here, pid=me, start=_process_start(me))) is None
    if sys.platform == "linux":  # the wall clock stepped 30 s (NTP, a VM resumed): the boot time psutil adds moves
        import psutil._pslinux

        booted = psutil._pslinux.boot_time()
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: booted + 30)
        assert store.dead(mine) is None  # its worker's heartbeat thread would fail its own live trial
        monkeypatch.undo()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    # this machine: its process is gone, or its pid was reused by another process (at once, whatever the heartbeat)
    assert store.dead(running(host=here, pid=gone.pid, start=time.time())) == WORKER_DIED
    assert store.dead(running(host=here, pid=me, start=123.0)) == WORKER_DIED
    # its pid and start since boot recur, in another boot (a container's pid 1 after a reboot)
    assert store.dead(running(host=here, pid=me, start=_process_start(me), boot="an earlier boot")) == WORKER_DIED
    # another machine: its heartbeat, 59 s old is alive, 61 s is not
    assert store.dead(running(host="elsewhere", pid=1, beat=time.time() - 59)) is None
    assert store.dead(running(host="elsewhere", pid=1, beat=time.time() - 61)) == WORKER_DIED
    # no owner (a trial asked for outside masklab's workers, which create theirs with the owner in one write):
    # failed at once; it held a budget slot for 3600 s before
    assert store.dead(running()) == NO_OWNER
    with store.lock():
        trials = store.fail_dead()
    failed = {t.number: t.user_attrs.get("fail_reason") for t in trials if t.state.name == "FAIL"}
    assert failed == {1: WORKER_DIED, 2: WORKER_DIED, 3: WORKER_DIED, 5: WORKER_DIED, 6: NO_OWNER}
    # seen from the machine 'elsewhere' (MASKLAB_HOSTNAME): trial 0 is another host's, with a fresh heartbeat
    monkeypatch.setenv("MASKLAB_HOSTNAME", "elsewhere")
    assert store.dead(trials[0]) is None


def test_two_workers_share_one_study(tmp_path):
    cmd = sweep_cmd(tmp_path, "optimizer.lr=tag(log,interval(0.005,0.05))", n_trials=4, name="w")
    first = run(cmd, tmp_path, wait=False)
    time.sleep(1.0)
    second = run(cmd, tmp_path, wait=False)
    outs = [p.communicate(timeout=600)[0] for p in (first, second)]
    for k, (p, out) in enumerate(zip((first, second), outs)):
        if p.returncode:  # shown under "Captured stdout" (an assertion message would be cut to a few lines)
            print(f"--- worker {k} exited {p.returncode}; its last 6000 characters:\n{out[-6000:]}")
    assert [p.returncode for p in (first, second)] == [0, 0]
    study = load(tmp_path, "w")
    assert states(study) == [(i, "COMPLETE") for i in range(4)]  # n_trials in total, distinct numbers
    workers = {t.user_attrs["masklab_owner"]["pid"] for t in study.trials}
    assert workers == {first.pid, second.pid}  # both really worked
    assert "database is locked" not in "".join(outs)


def test_default_learning_rate_range_follows_the_optimizer():
    from conftest import compose_cfg

    def lr_range(*overrides):
        dist = parse(compose_cfg([*overrides, "hparams_search=default"], tiny=False).hparams_search, {}, [])[0][
            "optimizer.lr"
        ]
        return pytest.approx((dist.low, dist.high))

    assert lr_range("optimizer=sgd") == (0.005, 0.05)  # a quarter to 2.5x SGD's 0.02
    assert lr_range() == (2.5e-4, 2.5e-3)  # shapes trains with adamw_scratch (1e-3)
    assert lr_range("data=pennfudan", "data.image_size=320") == (0.0025, 0.025)  # prepared data: sgd_finetune's 0.01


@pytest.mark.parametrize(
    "overrides, sizes",
    [
        ([], (96, 128, 160)),
        (["data=pennfudan", "data.image_size=320"], (256, 320, 416)),
        (["data=coco", "data.image_size=512"], (384, 512, 640)),
        (["data.image_size=100"], (64, 100, 128)),
    ],
)
def test_default_image_sizes_follow_the_data(overrides, sizes):
    """The default space tried 96-160 px on every dataset: shapes' sizes, a fifth of a photo's 512 (data=coco)."""
    from conftest import compose_cfg

    cfg = compose_cfg([*overrides, "hparams_search=default"], tiny=False)
    assert parse(cfg.hparams_search, {}, [])[0]["data.image_size"].choices == sizes


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed SystemExit
def test_a_sigterm_whose_exit_python_swallowed_still_stops_the_worker_before_its_next_trial(tmp_path):
    """A signal handler's exception raised while a weakref callback or ``__del__`` runs is printed as 'Exception
    ignored' and dropped: the worker must still stop, not start the next trial."""
    import gc
    import weakref

    from masklab import on_interrupt
    from masklab.sweep.schedulers import Scheduler
    from masklab.sweep.storage import Store
    from masklab.sweep.sweeper import OptunaSweeperBase, Session

    store = Store(f"journal:{journal(tmp_path)}", tmp_path, stale_after_s=120, study_name="s", direction="maximize")
    dists = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    session = Session(store, Scheduler(), None, dists, [], [], ["v"], 3, "journal")
    sweeper = object.__new__(OptunaSweeperBase)
    sweeper.duplicates, sweeper.study_name = "train", "s"

    class Held:
        pass

    def signal_inside_the_callback():
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, and its SystemExit stops at the callback's edge

    with pytest.raises(SystemExit) as exited, on_interrupt(lambda: None):
        held = Held()
        weakref.finalize(held, signal_inside_the_callback)
        del held
        gc.collect()
        sweeper._ask(session)
    assert exited.value.code == 143 and store.trials() == []  # no trial claimed after the stop


def test_a_failed_trial_s_reason_keeps_no_password(tmp_path):
    """``fail_reason`` goes to the study's storage and the trial's MLflow tags: a URL's password in the error that
    failed the trial (e.g. its tracking store's) is masked there, as in console lines."""
    from masklab import MasklabError
    from masklab.sweep.schedulers import Scheduler
    from masklab.sweep.storage import Store
    from masklab.sweep.sweeper import OptunaSweeperBase, Session

    class Tracker:
        def after_trial(self, trial, state, reason):
            self.reason = reason
            return state

    store = Store(f"journal:{journal(tmp_path)}", tmp_path, stale_after_s=120, study_name="s", direction="maximize")
    dists = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    session = Session(store, Scheduler(), tracker := Tracker(), dists, [], [], ["v"], 3, "journal")
    sweeper = object.__new__(OptunaSweeperBase)
    sweeper.duplicates, sweeper.study_name = "train", "s"
    trial = sweeper._ask(session)
    error = MasklabError("cannot log to postgresql://ml:s3cr3t@db/mlflow")
    assert sweeper._tell(session, trial, error, None) == (optuna.trial.TrialState.FAIL, None)
    masked = "cannot log to postgresql://ml:***@db/mlflow"
    assert store.frozen(trial).user_attrs["fail_reason"] == masked and tracker.reason == masked


def test_a_worker_that_does_not_see_the_study_s_checkpoint_dir_is_refused(tmp_path, monkeypatch):
    # two machines given checkpoint_dir=/data/ckpt, each its own local disk: the second would fail every promotion
    from masklab import MasklabError
    from masklab.paths import read_text
    from masklab.sweep.storage import Store

    store = Store(f"journal:{tmp_path}/j", tmp_path, stale_after_s=60, study_name="s")
    shared, local = tmp_path / "shared", tmp_path / "b-local"
    monkeypatch.setenv("MASKLAB_HOSTNAME", "a")
    store.same_checkpoints(None)  # no checkpoint_dir: nothing kept
    assert "masklab_checkpoints" not in store.study.user_attrs
    store.same_checkpoints(str(shared))
    token = store.study.user_attrs["masklab_checkpoints"]["token"]
    assert (shared / "s" / ".masklab-study").read_text() == token
    monkeypatch.setenv("MASKLAB_HOSTNAME", "b")
    store.same_checkpoints(str(shared))  # b sees the folder a wrote: a shared mount
    with pytest.raises(MasklabError) as err:
        store.same_checkpoints(str(local))
    assert str(err.value) == (
        f"hydra.sweeper.checkpoint_dir={local}: this machine does not see the study's checkpoints there: a keeps them "
        f"in {shared}, and {local}/s/.masklab-study here is missing; give a folder every machine mounts, or an fsspec "
        "URL (s3://...), so that any worker can resume and evaluate any trial"
    )
    assert not local.exists()  # refused before writing anything there
    monkeypatch.setenv("MASKLAB_HOSTNAME", "a")
    (shared / "s" / ".masklab-study").unlink()  # its own host, the folder emptied: marked again with the same token
    store.same_checkpoints(str(shared))
    assert (shared / "s" / ".masklab-study").read_text() == token
    store.same_checkpoints("memory://ck")  # an fsspec URL likewise
    assert read_text("memory://ck/s/.masklab-study", "k") == token
