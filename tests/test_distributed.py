"""A study on several machines, for real: a PostgreSQL storage and an ``mlflow server`` on 127.0.0.1, and two
'machines' emulated as processes with their own hostname (``MASKLAB_HOSTNAME``) and project folder, which share
only the database, the tracking server and (for ASHA) a checkpoint folder."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY
from helpers.services import PASSWORD, MlflowServer, Postgres, StorageProxy, free_port, pg_bin

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("services")]  # one cluster and server for the module


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run installs it)")
    pytest.importorskip("psycopg", reason='the database driver: pip install -e ".[dev,distributed]"')
    root = tmp_path_factory.mktemp("services")
    pg = Postgres().start()
    server = None
    try:
        server = MlflowServer(pg.database("mlflow"), root / "mlflow").wait()
        yield pg, server
    finally:
        if server:
            server.stop()
        pg.stop()


STARTED: list[subprocess.Popen] = []
TEST_APP = "masklab-test"  # application_name of the test's own database connections


@pytest.fixture(autouse=True)
def no_machine_left_running():
    """A test that fails midway must not leave its 'machines' training (or holding the database) after it."""
    yield
    while STARTED:
        p = STARTED.pop()
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def worker(tmp_path: Path, host: str, mlflow_uri: str, storage: str, *overrides: str, n_trials: int):
    """One machine's ``train.py -m`` on the shared study: its own folder and hostname; the password given on the
    command line on machine a, through an environment variable (as the README says) on the others."""
    env = {**os.environ, "MASKLAB_HOSTNAME": host, "MLFLOW_TRACKING_URI": mlflow_uri, "OPTUNA_STORAGE": storage,
           "MASKLAB_LOCK_LOG": str(tmp_path / f"{host}.locks.json")}  # fmt: skip
    given = storage if host == "a" else "${oc.env:OPTUNA_STORAGE}"
    # train.py, watched while it holds the storage's lock (helpers/under_lock.py)
    cmd = [sys.executable, str(ROOT / "tests" / "helpers" / "under_lock.py"), "-m", "hydra/sweeper=optuna",
           *[o for o in TINY if not o.startswith("logger=")], "logger=mlflow", f"paths.root_dir={tmp_path / host}",
           "experiment_name=d", "hparams_search=none", "optimizer.lr=tag(log,interval(0.001,0.05))",
           f"hydra.sweeper.storage='{given}'", f"hydra.sweeper.n_trials={n_trials}", *overrides]  # fmt: skip
    log = (tmp_path / f"{host}.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    STARTED.append(proc)  # killed after the test if it is still running
    return proc


def finish(tmp_path: Path, procs: dict, timeout: float = 600) -> dict[str, str]:
    for p in procs.values():
        p.wait(timeout=timeout)
    logs = {host: (tmp_path / f"{host}.log").read_text() for host in procs}
    for host, p in procs.items():
        if p.returncode not in (0, -signal.SIGKILL):  # shown under "Captured stdout"
            print(f"--- machine {host} exited {p.returncode}:\n{logs[host][-6000:]}")
    return logs


def most_connections(pg: Postgres, db: str, procs: dict, until: threading.Event | None = None) -> int:
    """The most connections to database ``db`` seen while ``procs`` run, or ``until`` it is set, the test's own
    left out (the README's connection figures)."""
    query = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND application_name <> '{TEST_APP}'"
    most = 0
    while any(p.poll() is None for p in procs.values()) and not (until and until.is_set()):
        most = max(most, int(pg.sql(query)))
        time.sleep(0.5)
    return most


@functools.cache
def _own_storage(url: str):
    """The test's one pool per database, named for most_connections to leave out; the workers create the tables
    (under their lock), the test only reads them."""
    import optuna

    connect = {"connect_args": {"application_name": TEST_APP}}
    return optuna.storages.RDBStorage(url, skip_table_creation=True, engine_kwargs=connect)


def study_of(url: str):
    import optuna

    return optuna.load_study(study_name="d", storage=_own_storage(url))


def trials_now(url: str) -> list:
    """The study's trials, or none while the workers have not created it yet."""
    try:
        return study_of(url).get_trials(deepcopy=False)
    except Exception:  # no tables yet (ProgrammingError), no study yet (KeyError)
        return []


def assert_no_password(pg: Postgres, server: MlflowServer, tmp_path: Path, logs: dict) -> None:
    from mlflow import MlflowClient

    for host, text in logs.items():
        assert PASSWORD not in text, f"machine {host}'s console"
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert not leaks, f"files with the password: {leaks}"  # outputs/, multirun/ (.hydra/*.yaml, logs, checkpoints)
    client = MlflowClient(server.uri)
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        assert PASSWORD not in str(run.data.params) + str(run.data.tags), run.info.run_name
    assert "***@127.0.0.1" in str(client.search_runs([client.get_experiment_by_name("d").experiment_id]))
    for db in ("mlflow", *[d for d in pg.sql("SELECT datname FROM pg_database").split() if d.startswith("optuna")]):
        assert PASSWORD not in pg.dump(db), f"database {db}"
    artifacts = [p for p in (server.root / "artifacts").rglob("*") if p.is_file()]
    assert artifacts and not [p for p in artifacts if PASSWORD.encode() in p.read_bytes()]


def assert_nothing_imported_under_the_lock(tmp_path: Path, procs: dict) -> None:
    """The other machine's asks wait while one holds the storage's lock: nothing is imported there."""
    for host in procs:
        holds = json.loads((tmp_path / f"{host}.locks.json").read_text())
        assert len(holds) >= 3 and not any(holds), (host, holds)


def test_two_machines_with_the_default_pruner_share_one_budget_and_no_password(services, tmp_path):
    from mlflow import MlflowClient

    pg, server = services
    url = pg.database("optuna_asha")  # empty: both machines create the tables at once
    shared_ckpt = tmp_path / "shared-checkpoints"  # ASHA resumes a paused trial on whichever machine asks first
    args = ["schedule.epochs=2", "hydra.sweeper.pruner_kwargs={min_resource:1,reduction_factor:2}",
            "hydra.sweeper.prune_on=val/loss", f"hydra.sweeper.checkpoint_dir={shared_ckpt}"]  # fmt: skip
    procs = {h: worker(tmp_path, h, server.uri, url, *args, n_trials=4) for h in ("a", "b")}
    most = most_connections(pg, "optuna_asha", procs)
    logs = finish(tmp_path, procs)
    assert [p.returncode for p in procs.values()] == [0, 0]
    assert 0 < most <= 2 * 3, most  # README: 3 per worker without the proxy
    trials = study_of(url).trials
    configurations = [t for t in trials if t.user_attrs["asha_rung"] == 0]
    assert len(configurations) == 4 and not [t for t in trials if t.state.name not in ("COMPLETE", "PRUNED")]
    assert {t.user_attrs["masklab_owner"]["host"] for t in trials} == {"a", "b"}  # both machines worked
    assert len(trials) > 4  # promotions ran, from the shared checkpoint folder
    client = MlflowClient(server.uri)
    runs = client.search_runs([client.get_experiment_by_name("d").experiment_id])
    parents = [r for r in runs if r.data.tags.get("masklab.role") == "study"]
    assert len(parents) == 1 and len(runs) == 1 + 4  # one parent, one run per configuration
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["host"] for r in runs if r not in parents} <= {"a", "b"}  # where each one's files are
    assert "UniqueViolation" not in "".join(logs.values())
    assert_nothing_imported_under_the_lock(tmp_path, procs)
    assert_no_password(pg, server, tmp_path, logs)


def test_two_machines_through_a_grpc_storage_proxy_keep_the_budget_and_wait_out_its_restart(services, tmp_path):
    """The proxy restarts (down 4 s) as the first trial to report ends: the workers, and a trial starting on the other
    worker meanwhile, wait for it; the budget is met without a FAIL."""
    pytest.importorskip("grpc", reason='the gRPC proxy\'s client: pip install -e ".[dev,distributed]"')
    pg, server = services
    url = pg.database("optuna_proxy")
    proxy = StorageProxy(url, tmp_path).wait()
    down, over = threading.Event(), threading.Event()

    def restart() -> None:
        while not any(t.intermediate_values for t in trials_now(url)):
            if over.wait(0.1):  # the test ended first: no restart to outlive it
                return
        down.set()
        proxy.down_for(4)

    restarted = threading.Thread(target=restart, daemon=True)
    try:
        args = ["hydra.sweeper.pruner=median", f"hydra.sweeper.proxy={proxy.address}", "hydra.sweeper.heartbeat_s=1"]
        procs = {h: worker(tmp_path, h, server.uri, url, *args, n_trials=3) for h in ("a", "b")}
        restarted.start()
        most = most_connections(pg, "optuna_proxy", procs, until=down)  # steady state (one run counted 5 across it)
        logs = finish(tmp_path, procs)
        assert [p.returncode for p in procs.values()] == [0, 0]
        assert any("database does not answer: UNAVAILABLE" in log or "database does not answer (UNAVAILABLE" in log
                   for log in logs.values())  # fmt: skip
        assert 0 < most <= 2 * 1 + 2, most  # README: 1 per worker with the proxy, the proxy's own 2
        trials = study_of(url).trials  # read from the database itself: the proxy wrote there
        assert [t.state.name for t in trials] == ["COMPLETE"] * 3, [t.user_attrs.get("fail_reason") for t in trials]
        assert {t.user_attrs["masklab_owner"]["host"] for t in trials} == {"a", "b"}
        assert proxy.trials_created() == len(trials)  # every trial was asked for through the proxy
        assert_nothing_imported_under_the_lock(tmp_path, procs)
        assert_no_password(pg, server, tmp_path, logs)
    finally:
        over.set()
        if restarted.is_alive():  # mid-restart: its new proxy would outlive the stop below
            restarted.join(timeout=30)
        proxy.stop()


def test_the_database_down_behind_the_grpc_proxy_is_an_outage_waited_for(services, tmp_path):
    """Behind Optuna's gRPC proxy, a database outage reaches the worker only as the proxy's words for Optuna's
    StorageInternalError (storage.PROXY_DB): taken as an outage and waited for, not as a trial's failure. Pins
    that text: an Optuna that words it otherwise fails here."""
    pytest.importorskip("grpc", reason='the gRPC proxy\'s client: pip install -e ".[dev,distributed]"')
    import optuna

    from masklab.sweep.storage import open_storage, patiently, unreachable

    pg, _ = services
    url = pg.database("proxy_db_down")
    proxy = StorageProxy(url, tmp_path).wait()
    storage = open_storage(url, proxy.address)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    back, halted = threading.Timer(3, pg.serve), False
    try:
        pg.halt()
        halted = True
        with pytest.raises(Exception) as down:  # grpc's RpcError: INTERNAL, with Optuna's words
            storage.create_new_trial(study_id)
        assert unreachable(down.value) is not None, repr(down.value)
        back.start()  # PostgreSQL back in 3 s: the same call, made patiently, gets through
        trial_id = patiently(lambda: storage.create_new_trial(study_id), url, wait_s=60, every_s=0.5)
        assert storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING
    finally:
        if back.is_alive():
            back.join()
        elif halted and not back.finished.is_set():  # failed before the timer: the module's other tests need it up
            pg.serve()
        proxy.stop()


def test_a_killed_machine_s_trial_fails_within_the_bound_and_the_study_completes(services, tmp_path):
    from mlflow import MlflowClient

    pg, server = services
    url = pg.database("optuna_kill")
    stale, beat = 8, 1
    args = ["schedule.epochs=3", "data.train.num_images=8", "hydra.sweeper.pruner=none",
            f"hydra.sweeper.stale_after_s={stale}", f"hydra.sweeper.heartbeat_s={beat}"]  # fmt: skip
    procs = {h: worker(tmp_path, h, server.uri, url, *args, n_trials=3) for h in ("a", "b")}
    victim, end = None, time.time() + 300
    while victim is None and time.time() < end:  # b's trial, once it trains (its MLflow run recorded)
        time.sleep(0.5)
        running = [t for t in trials_now(url) if t.state.name == "RUNNING"]
        victim = next((t for t in running if t.user_attrs.get("masklab_owner", {}).get("host") == "b"
                       and "mlflow_run_id" in t.user_attrs), None)  # fmt: skip
    assert victim is not None, "machine b never ran a trial"
    os.killpg(procs["b"].pid, signal.SIGKILL)
    killed = time.monotonic()  # not the wall clock, which a step (NTP, a VM resumed) moves
    while study_of(url).trials[victim.number].state.name == "RUNNING" and time.monotonic() - killed < 120:
        time.sleep(0.25)
    took = time.monotonic() - killed
    logs = finish(tmp_path, procs)
    assert took <= stale + beat + 3, f"FAIL {took:.1f} s after the kill (bound: stale_after_s + heartbeat_s)"
    assert procs["a"].returncode == 0
    trials = study_of(url).trials
    failed = trials[victim.number]
    assert failed.state.name == "FAIL" and "worker died" in failed.user_attrs["fail_reason"]
    assert sorted(t.state.name for t in trials) == ["COMPLETE"] * 3 + ["FAIL"]  # a ran one more: n_trials met
    client = MlflowClient(server.uri)
    run = client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["trial_state"] == "FAIL"
    assert "worker died" in run.data.tags["fail_reason"]
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"  # the survivor ended the study's run
    assert PASSWORD not in logs["a"]


def test_asha_across_machines_needs_a_shared_checkpoint_folder_and_errors_hide_the_password(services, tmp_path):
    pg, server = services
    url = pg.database("optuna_refuse")
    wrong = url.replace(f":{pg.port}/", f":{pg.port}/nosuchdb_")  # refused: the error names the URL
    # the two start-ups side by side (each imports torch and Hydra)
    procs = {
        "a": worker(tmp_path, "a", server.uri, url, "schedule.epochs=4", n_trials=2),
        "b": worker(tmp_path, "b", server.uri, wrong, "hydra.sweeper.pruner=median", n_trials=1),
    }
    logs = finish(tmp_path, procs)
    assert procs["a"].returncode == 1
    assert logs["a"].strip().splitlines()[-1] == (
        "error: hydra.sweeper.pruner=asha on postgresql storage: any machine may resume a paused trial, so its "
        "checkpoint must be where every machine sees it: give hydra.sweeper.checkpoint_dir=<shared folder or "
        "fsspec URL>, or choose another pruner (e.g. hydra.sweeper.pruner=median)"
    )
    last = logs["b"].strip().splitlines()[-1]
    assert procs["b"].returncode == 1 and last.startswith("error: hydra.sweeper.storage=postgresql://ml:***@127.0.0.1")
    assert PASSWORD not in logs["a"] + logs["b"]


def test_a_database_tracking_uri_s_password_is_in_no_console_line_checkpoint_or_help(services, tmp_path, capsys):
    """MLflow's store as a database URL with its password (no server), given on a sweep's command line: its trial
    trains with it, and the trial's summary, saved configs and checkpoints, evaluate.py's line and ``--help``
    (the URL in the environment) show it masked."""
    from masklab.eval.outputs import log_to_mlflow

    pg, _ = services
    url = pg.database("mlflow_direct")
    env = {**os.environ, "MLFLOW_TRACKING_URI": url}
    tiny = [o for o in TINY if not o.startswith("logger=")]
    study = ["-m", "hydra/sweeper=optuna", "hparams_search=none", "optimizer.lr=choice(0.01)",
             "hydra.sweeper.n_trials=1", "hydra.sweeper.pruner=none", f"paths.tracking_uri={url}"]  # fmt: skip

    def cli(script: str, *args: str) -> str:
        proc = subprocess.run([sys.executable, str(ROOT / "src" / script), *args], env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        return f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"

    trained = cli("train.py", *study, *tiny, "logger=mlflow", f"paths.root_dir={tmp_path}", "experiment_name=direct")
    assert trained.startswith("exit 0") and "trial 0 COMPLETE" in trained, trained[-3000:]
    assert f"at postgresql://ml:***@127.0.0.1:{pg.port}/mlflow_direct" in trained  # the trial's run summary
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", trained).group(1)
    log_to_mlflow(url, "direct", run_id, {"test/segm_AP": 0.5}, [])  # what evaluate.py does at its end
    evaluated = capsys.readouterr().out
    assert evaluated == f"logged to MLflow run {run_id} (postgresql://ml:***@127.0.0.1:{pg.port}/mlflow_direct)\n"
    helped = cli("train.py", "--help") + cli("report.py", "--help")
    assert helped.count("(postgresql://ml:***@") == 2
    saved = [p.suffix for p in tmp_path.rglob("*") if p.suffix in (".ckpt", ".yaml")]
    assert ".ckpt" in saved and ".yaml" in saved  # the trial's checkpoints and .hydra/*.yaml, with the study's
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    for out in (trained, evaluated, helped):
        assert PASSWORD not in out


def _trials(url: str, name: str) -> list:
    import optuna

    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except Exception:  # no tables or study yet
        return []


def test_a_database_outage_is_waited_for_and_a_long_one_is_one_line(services, tmp_path):
    """The database down for a few seconds while a trial trains (a restart, a network cut): the worker waits for it
    to tell the trial, and the study completes; down longer than stale_after_s: one line, and nothing lost."""
    pg, _ = services
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), "-m", "hydra/sweeper=optuna", *TINY, "schedule.epochs=6",
           "hparams_search=none", "optimizer.lr=tag(log,interval(0.001,0.05))", "hydra.sweeper.pruner=median",
           "hydra.sweeper.heartbeat_s=1", "hydra.sweeper.n_trials=2", f"paths.root_dir={tmp_path}"]  # fmt: skip

    def sweep(name: str, url: str, limit_s: int, down_s: float) -> tuple[int, str]:
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen([*cmd, f"experiment_name={name}", f"hydra.sweeper.storage='{url}'",
                                 f"hydra.sweeper.stale_after_s={limit_s}"], stdout=log.open("a"),
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        STARTED.append(proc)
        while not any(4 in t.intermediate_values for t in _trials(url, name)) and proc.poll() is None:
            time.sleep(0.2)  # trial 0 has reported its 5th epoch of 6: down while it trains the last and ends
        pg.down_for(down_s)
        return proc.wait(timeout=300), log.read_text()

    url = pg.database("outage")
    rc, out = sweep("outage", url, 120, down_s=8)
    assert rc == 0, out[-3000:]
    assert [t.state.name for t in _trials(url, "outage")] == ["COMPLETE", "COMPLETE"], out[-3000:]
    assert "the study's database does not answer ((psycopg.OperationalError) connection failed" in out
    assert "trying again every 1 s for up to 120 s" in out and "the study's database answers again" in out
    assert "Traceback" not in out and PASSWORD not in out
    url = pg.database("outage_long")  # down for longer than the worker waits
    rc, out = sweep("outage_long", url, 2, down_s=12)  # the trial waits up to 2 s for its metrics, its worker not
    assert rc == 1 and re.match(
        rf"error: hydra.sweeper.storage=postgresql://ml:\*\*\*@127.0.0.1:{pg.port}/outage_long: the database has not "
        r"answered for \d s \(\(psycopg.OperationalError\) connection failed",
        out.strip().splitlines()[-1],
    ), out[-3000:]
    assert out.strip().endswith("the study is kept there: run the same command once it is back")
    assert out.count("the study's database does not answer") == 1  # the trial's wait; its worker's counts from it
    # the trial it was telling stays RUNNING: the same command, once the database is back, fails it at once (its
    # worker is gone from this host) and goes on, as after a kill (test_sweep: killed_sweep_resumes)
    assert [t.state.name for t in _trials(url, "outage_long")] == ["RUNNING"]


def test_a_trial_that_starts_while_the_database_is_down_waits_for_it(services, tmp_path, caplog):
    """A trial's job loads its trial and records its MLflow run on it as it starts, and leaves its final metrics on
    it as it ends (what several objectives are told from): a database that is down then (here for 4 s and 3 s) is
    waited for, up to the sweep's stale_after_s, as its worker waits; nothing is lost."""
    import types

    from masklab.callbacks.optuna_trial import OptunaTrial
    from masklab.sweep.storage import Store

    pg, _ = services
    url = pg.database("setup_outage")
    store = Store(url, tmp_path, 60, 0.5, study_name="d", direction="maximize")
    trial_id = store.ask()
    callback = OptunaTrial({"study": "d", "storage": url, "trial_id": trial_id, "stale_after_s": 60,
                            "heartbeat_s": 0.5}, "val/segm_AP")  # fmt: skip
    trainer = types.SimpleNamespace(logger=types.SimpleNamespace(run_id="run-0"), is_global_zero=True)

    def while_down(seconds: float, call) -> float:
        pg.halt()
        back = threading.Timer(seconds, pg.serve)
        back.start()
        try:
            start = time.monotonic()
            with caplog.at_level("INFO", logger="masklab.sweep"):
                call()
            return time.monotonic() - start
        finally:
            back.join()

    waited = while_down(4, lambda: callback.setup(trainer, None, "fit"))
    assert 3.5 < waited < 30 and callback.bridge is not None, waited
    assert store.frozen(trial_id).user_attrs["mlflow_run_id"] == "run-0"
    waited = while_down(3, lambda: callback.finish({"val/segm_AP": 0.5, "val/bbox_AP": float("nan")}))
    assert 2.5 < waited < 30 and store.frozen(trial_id).user_attrs["metrics"] == {"val/segm_AP": 0.5}, waited
    assert caplog.text.count("the study's database does not answer") == 2 and "answers again" in caplog.text
    assert "did not reach" not in caplog.text and PASSWORD not in caplog.text


def _journal_trials(path: Path) -> list:
    import optuna

    backend = optuna.storages.journal.JournalFileBackend(str(path))
    try:
        return optuna.load_study(study_name="down", storage=optuna.storages.JournalStorage(backend)).get_trials()
    except KeyError:  # no study yet
        return []


def test_mlflow_s_database_refusing_or_going_down_is_one_line_and_its_runs_end_on_the_next_session(services, tmp_path):
    """MLflow's store a database, the study a journal file: a wrong password is one line within seconds, before any
    trial (MLflow itself retries for 100 s); the database down from trial 0's first report stops the sweep with one
    line about MLflow's database, not the study's; once it is back, the same command goes on and ends trial 0's run
    as the study has it."""
    from mlflow import MlflowClient

    pg, _ = services
    url, journal = pg.database("mlflow_down"), tmp_path / "study.journal"
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), "-m", "hydra/sweeper=optuna",
           *[o for o in TINY if not o.startswith("logger=")], "logger=mlflow", "schedule.epochs=6",
           "hparams_search=none", "optimizer.lr=tag(log,interval(0.001,0.05))", "hydra.sweeper.pruner=median",
           "hydra.sweeper.n_trials=2", f"paths.root_dir={tmp_path}", "experiment_name=down",
           f"hydra.sweeper.storage=journal:{journal}"]  # fmt: skip

    def sweep(tracking_uri: str, halt_at_first_report: bool = False) -> tuple[int, str, float]:
        log, start = tmp_path / "sweep.log", time.monotonic()
        proc = subprocess.Popen(cmd, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}, stdout=log.open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        STARTED.append(proc)
        while halt_at_first_report and proc.poll() is None and not any(t.intermediate_values
                                                                       for t in _journal_trials(journal)):  # fmt: skip
            time.sleep(0.2)
        if halt_at_first_report:
            pg.halt()  # while trial 0 trains its 5 other epochs: its run cannot end, nor its worker tag it
        rc = proc.wait(timeout=300)
        return rc, log.read_text(), time.monotonic() - start

    rc, out, took = sweep(url.replace(PASSWORD, "wrong"))
    assert rc == 1 and took < 60 and not _journal_trials(journal), (took, out[-3000:])
    assert out.strip().splitlines()[-1] == (
        f"error: MLflow's tracking database at postgresql://ml:***@127.0.0.1:{pg.port}/mlflow_down cannot be used "
        f'(connection failed: connection to server at "127.0.0.1", port {pg.port} failed: FATAL: password '
        'authentication failed for user "ml"): is it running, and are paths.tracking_uri (MLFLOW_TRACKING_URI) '
        "and its password right?"
    )
    try:
        rc, out, _ = sweep(url, halt_at_first_report=True)
    finally:
        pg.serve()
    last = out.strip().splitlines()[-1]
    assert rc == 1 and last.startswith("error: MLflow's tracking database cannot be used (connection failed: "), out
    assert "Traceback" not in out and "study's database" not in out and PASSWORD not in out
    (failed,) = _journal_trials(journal)
    assert failed.state.name == "FAIL" and failed.user_attrs["fail_reason"].startswith("MLflow's tracking database")
    rc, out, _ = sweep(url)
    assert rc == 0 and "trial 0's MLflow run was left RUNNING: ended FAIL" in out, out[-3000:]
    assert [t.state.name for t in _journal_trials(journal)] == ["FAIL", "COMPLETE", "COMPLETE"]
    client = MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name("down").experiment_id])
    status = {r.data.tags.get("trial_number", "study"): (r.info.status, r.data.tags.get("trial_state")) for r in runs}
    assert status == {"study": ("FINISHED", None), "0": ("FAILED", "FAIL"), "1": ("FINISHED", "COMPLETE"),
                      "2": ("FINISHED", "COMPLETE")}  # fmt: skip


def test_an_mlflow_server_that_does_not_answer_is_one_line_within_seconds(tmp_path):
    """A tracking server not started yet, or a wrong port: MLflow's client retries for 4 min in silence; train.py and
    report.py say it in one line within seconds."""
    uri = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    for script, args in (("train.py", [*TINY, "logger=mlflow"]), ("report.py", [])):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(ROOT / "src" / script), *args, f"paths.root_dir={tmp_path}"],
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        took = time.monotonic() - start
        assert proc.returncode == 1 and took < 60, (script, took, proc.stderr[-3000:])
        assert proc.stderr.strip().splitlines()[-1] == (
            f"error: MLflow's tracking server at {uri} cannot be used (Connection refused): is it running, and are "
            "paths.tracking_uri (MLFLOW_TRACKING_URI) and its password right?"
        ), script
        assert "Traceback" not in proc.stderr + proc.stdout


def test_a_network_cut_ends_the_worker_within_its_bound_not_when_the_network_is_back(tmp_path):
    """A network cut drops packets (no refusal to retry on): the worker must not wait out TCP's ~15 min per call.
    The loopback of a network namespace of its own (helpers/partition.py) is down for 60 s from trial 0's first
    report, with heartbeat_s=1 and stale_after_s=3: trial 0 trains on, and the worker ends with its one line well
    within the cut, not when the network is back."""
    result = cut_off(tmp_path, "sweep")
    last = result["log"].strip().splitlines()[-1]
    assert result["rc"] == 1 and result["ended_s"] is not None and result["ended_s"] < 45, (result["ended_s"], last)
    assert last.startswith("error: hydra.sweeper.storage=postgresql://ml:***@127.0.0.1:") and "has not answered" in last
    assert result["states"] == ["RUNNING"] and PASSWORD not in result["log"] and "Traceback" not in result["log"]


def test_a_worker_cut_off_while_it_holds_the_lock_or_a_trial_s_row_loses_them_within_seconds(tmp_path):
    """PostgreSQL keeps a silent client's session, its advisory lock and its row locks, until TCP gives up (2 h by
    default). Every other worker would wait that long: for the storage's lock, or, failing that worker's trial as
    dead under that lock, for the trial's row, which Optuna locks as it writes it. Both connections have the server
    probe them every second or so here."""
    result = cut_off(tmp_path, "lock")
    assert result == {"held": True, "lock_taken_by_another": True, "row_updated_by_another": True}


def cut_off(tmp_path: Path, scenario: str) -> dict:
    """helpers/partition.py's ``scenario`` in a network namespace of its own, whose loopback it takes down."""
    if pg_bin() is None or os.geteuid() != 0 or subprocess.run(["unshare", "-n", "true"]).returncode:
        pytest.skip("needs PostgreSQL and root for a network namespace of its own (unshare -n): .ci/run has both")
    script = ROOT / "tests" / "helpers" / "partition.py"
    cmd = ["unshare", "-n", sys.executable, str(script), str(tmp_path), scenario]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])
