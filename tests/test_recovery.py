"""Kill points of a sweep on one machine that must recover on the next run, and passwords that must not leak."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import optuna
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from masklab import MasklabError, exit_on_error
from masklab.secrets import STORAGE_ENV, install, mask, reveal
from masklab.sweep.storage import Store
from masklab.track.mlflow_utils import ensure_store, flat_params
from masklab.track.study_runs import Tracker


def test_passwords_are_masked_in_urls_log_lines_and_mlflow_params(monkeypatch, caplog):
    url = "postgresql://ml:s3cr%40t@db:5432/optuna"
    assert mask(url) == "postgresql://ml:***@db:5432/optuna"
    assert mask(f"storage='{url}' and http://u:p@mlflow:5000") == (
        "storage='postgresql://ml:***@db:5432/optuna' and http://u:***@mlflow:5000"
    )
    assert mask(r"- a=postgresql\://ml\:s3cr3t@db/x") == r"- a=postgresql\://ml\:***@db/x"  # a grid job's overrides
    assert mask("journal:/tmp/x.journal") == "journal:/tmp/x.journal" and mask("http://host:5000") == "http://host:5000"
    monkeypatch.setenv(STORAGE_ENV, url)  # what the sweeper keeps for its trials
    assert reveal(mask(url)) == url and reveal("sqlite:///other.db") == "sqlite:///other.db"
    install()
    with caplog.at_level(logging.INFO):
        logging.getLogger("any.library").warning("cannot connect to %s", url)  # anyone's log line
    assert caplog.records[-1].getMessage() == "cannot connect to postgresql://ml:***@db:5432/optuna"
    cfg = OmegaConf.create({"sweep": {"storage": url}, "paths": {"tracking_uri": "http://u:p@h:5000"}})
    params = {k: mask(str(v)) for k, v in flat_params(cfg).items()}  # what log_params logs
    assert "s3cr" not in str(params) and ":p@" not in str(params)


def test_a_cli_s_error_line_and_run_summary_mask_a_tracking_uri_s_password(capsys):
    from masklab.track.summary import run_summary

    uri = "postgresql://ml:s3cr3t@db/mlflow"
    with pytest.raises(SystemExit) as stop, exit_on_error():
        raise MasklabError(f"ckpt=runs:/0: no MLflow run 0 in {uri}")
    assert stop.value.code == 1 and capsys.readouterr().err == "error: ckpt=runs:/0: no MLflow run 0 in " + (
        "postgresql://ml:***@db/mlflow\n"
    )
    summary = run_summary({"val/segm_AP": 0.5}, "val/segm_AP", 0.5, None, "abc", "e", uri).splitlines()[-2:]
    assert summary == ["MLflow run abc in experiment 'e' at postgresql://ml:***@db/mlflow",
                       "  compare runs: mlflow ui --backend-store-uri postgresql://ml:***@db/mlflow"]  # fmt: skip
    served = run_summary({}, "val/segm_AP", 0.5, None, "abc", "e", "http://u:pw@mlflow:5000").splitlines()[-1]
    assert served == "  compare runs: open http://u:***@mlflow:5000"  # a tracking server: its address


def test_an_mlflow_store_is_created_whole_and_a_killed_creation_leaves_nothing_behind(tmp_path):
    db = tmp_path / "mlflow.db"
    (tmp_path / f".mlflow.db.{os.getpid() + 1}.creating").write_bytes(b"half a schema")  # a kill mid-creation
    ensure_store(f"sqlite:///{db}")
    client = MlflowClient(f"sqlite:///{db}")
    assert [e.name for e in client.search_experiments()] == ["Default"]  # a whole store: every later run opens it
    assert not (tmp_path / f".mlflow.db.{os.getpid()}.creating").exists()


def study_with_mlflow(tmp_path):
    """A journal study and the config a Tracker reads: MLflow in a SQLite file beside it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = Store(f"journal:{tmp_path}/j", tmp_path, stale_after_s=60, study_name="s")
    cfg = OmegaConf.create(
        {
            "logger": {"_target_": "x"},
            "paths": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
            "experiment_name": "s",
            "hydra": {"sweeper": {"sampler": "tpe", "n_trials": 2}},
        }
    )
    return store, cfg


def test_a_parent_run_created_by_a_worker_killed_before_recording_it_is_found_not_duplicated(tmp_path):
    store, cfg = study_with_mlflow(tmp_path)
    first = Tracker(cfg, store, tmp_path, [])
    first.open_parent()
    store.study.set_user_attr("mlflow_parent_run_id", None)  # as if killed between creating the run and recording it
    again = Tracker(cfg, store, tmp_path, [])
    again.open_parent()
    assert again.parent_id == first.parent_id
    runs = MlflowClient(cfg.paths.tracking_uri).search_runs([again.client.get_experiment_by_name("s").experiment_id])
    assert len(runs) == 1


def test_a_dead_trial_s_mlflow_run_ends_failed_even_before_it_was_recorded_on_the_trial(tmp_path):
    store, cfg = study_with_mlflow(tmp_path)
    tracker = Tracker(cfg, store, tmp_path, [])
    tracker.open_parent()
    exp = tracker.client.get_run(tracker.parent_id).info.experiment_id
    run = tracker.client.create_run(exp, tags={"mlflow.parentRunId": tracker.parent_id, "trial_number": "3"})
    tracker.dead_run(SimpleNamespace(number=3, user_attrs={}), "worker died (killed or crashed) mid-trial")
    ended = tracker.client.get_run(run.info.run_id)
    assert ended.info.status == "FAILED" and ended.data.tags["trial_state"] == "FAIL"
    assert ended.data.tags["fail_reason"] == "worker died (killed or crashed) mid-trial"


def test_child_runs_left_running_by_finished_trials_end_as_their_trials_did_on_the_next_session(tmp_path):
    """MLflow that did not answer as a trial ended leaves its run RUNNING: the study's next session ends it with the
    trial's state; a run a RUNNING trial still uses (an ASHA promotion resumes its configuration's run) stays."""
    store, cfg = study_with_mlflow(tmp_path)
    tracker = Tracker(cfg, store, tmp_path, [])
    tracker.open_parent()
    exp = tracker.client.get_run(tracker.parent_id).info.experiment_id

    def run(number: int) -> str:
        tags = {"mlflow.parentRunId": tracker.parent_id, "trial_number": str(number)}
        return tracker.client.create_run(exp, tags=tags).info.run_id

    failed, paused, done = store.study.ask(), store.study.ask(), store.study.ask()
    store.tell(failed, state=optuna.trial.TrialState.FAIL, fail_reason="MLflow's tracking database cannot be used")
    store.tell(paused, state=optuna.trial.TrialState.PRUNED, asha_rung=0, asha_paused=True)
    store.tell(done, 0.5)
    runs = {"failed": run(failed.number), "paused": run(paused.number), "done": run(done.number)}
    tracker.client.set_terminated(runs["done"])
    store.ask(asha_root=paused.number, asha_rung=1)  # its promotion, running: it has resumed the paused run
    Tracker(cfg, store, tmp_path, []).open_parent()  # the next session
    got = {k: tracker.client.get_run(v) for k, v in runs.items()}
    assert got["failed"].info.status == "FAILED" and got["failed"].data.tags["trial_state"] == "FAIL"
    assert got["failed"].data.tags["fail_reason"] == "MLflow's tracking database cannot be used"
    assert got["paused"].info.status == "RUNNING" and "trial_state" not in got["paused"].data.tags
    assert got["done"].info.status == "FINISHED" and "trial_state" not in got["done"].data.tags


def test_mlflow_s_tracking_store_not_answering_mid_run_is_one_line_naming_it(monkeypatch, tmp_path):
    """What MLflow raises when its server is gone after retrying (here at once), or its database refuses: the CLIs'
    one line names the server, or says it is MLflow's database (not the study's, which the sweep waits for)."""
    from masklab import user_message
    from masklab.sweep.storage import unreachable

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(Exception) as gone:
        MlflowClient("http://u:s3cr3t@127.0.0.1:9").search_experiments(max_results=1)  # port 9: nothing listens
    assert user_message(gone.value) == (
        "MLflow's tracking server at http://u:***@127.0.0.1:9 cannot be used (Connection refused): is it running, "
        "and are paths.tracking_uri (MLFLOW_TRACKING_URI) and its password right?"
    )
    (tmp_path / "mlflow.db").mkdir()  # a folder where the SQLite file should be: sqlite3 cannot open it
    monkeypatch.setattr("mlflow.store.db.utils.MAX_RETRY_COUNT", 1)
    with pytest.raises(Exception) as refused:
        MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()
    assert user_message(refused.value).startswith("MLflow's tracking database cannot be used (")
    assert unreachable(refused.value) is None
