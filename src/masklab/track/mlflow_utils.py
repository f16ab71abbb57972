"""MLflow helpers: run names, flattened params, the resolved config and the best checkpoint."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from lightning_utilities.core.rank_zero import rank_zero_only  # Lightning's own, without its 5-s import
from omegaconf import DictConfig, OmegaConf

from masklab.errors import causes, first_line, raised_in
from masklab.paths import absolute, hostname
from masklab.secrets import mask


def default_run_name(arch: str) -> str:
    """``<backbone>-<anchors>-<time>`` from Hydra's choices (``arch`` outside ``@hydra.main``)."""
    choices = {}
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
    except ValueError:  # composed outside @hydra.main (tests, notebooks)
        pass
    parts = [choices.get("backbone", arch), choices.get("anchors", "")]
    return "-".join(p for p in parts if p) + time.strftime("-%m%d-%H%M%S")


def sweep_tags(s: DictConfig | None) -> dict[str, str]:
    """MLflow tags that make a trial's run (``sweep`` node) the child of its study's parent run."""
    if not s or s.get("trial_id") is None:
        return {}
    tags = {"study": str(s.study), "trial_number": str(s.trial_number)}
    if s.get("parent_run_id"):
        tags["mlflow.parentRunId"] = str(s.parent_run_id)
    return tags


def make_logger(cfg: DictConfig, run_id: str | None):
    """The run's MLflow logger (``logger`` group; False for ``logger=none``), continuing ``run_id`` when resumed."""
    from hydra.utils import instantiate

    if not cfg.logger.get("_target_"):
        return False
    ensure_store(cfg.logger.tracking_uri)
    trial = cfg.sweep.trial_number
    name = cfg.run_name or (
        f"{cfg.sweep.study}-trial{trial:03d}" if trial is not None else default_run_name(cfg.backbone.arch)
    )
    return instantiate(
        cfg.logger,
        run_name=name,
        run_id=run_id,
        artifact_location=artifact_location(cfg.logger.tracking_uri),
        tags=sweep_tags(cfg.get("sweep")) or None,
    )


#: how long a CLI waits for MLflow's tracking server or database to answer at its start, in s (MLflow's own
#: retries wait 4 min for a server and 100 s for a database, in silence)
REACH_S = 10


def ensure_store(tracking_uri: str) -> None:
    """The tracking store, ready: a SQLite file created whole or not at all (a run killed while MLflow created its
    tables left a store every later run failed on: 'table datasets already exists'); a server or database checked to
    answer within :data:`REACH_S`, else one line."""
    from filelock import FileLock
    from mlflow import MlflowClient

    _quiet_database_errors()
    uri = str(tracking_uri)
    path = Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None
    if path is None:
        return reach(uri)
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=600):  # workers starting together: one creates it
        if path.is_file():
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
        tmp.unlink(missing_ok=True)
        MlflowClient(f"sqlite:///{tmp}").search_experiments()  # runs MLflow's migrations
        os.replace(tmp, path)


class _WithoutTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = record.exc_text = None
        return True


def _quiet_database_errors() -> None:
    """MLflow's database errors logged without their tracebacks (a hundred lines each, several per failed call):
    each record's message says what failed, and the run's own error its one line."""
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _WithoutTraceback) for f in logger.filters):
        logger.addFilter(_WithoutTraceback())


def reach(uri: str) -> None:
    """One line, within about :data:`REACH_S`, when the tracking server or database at ``uri`` does not answer
    (down, a wrong port or host) or refuses (a wrong password); nothing for a local store."""
    from masklab import MasklabError

    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    try:
        if scheme in ("http", "https"):
            _ask_server(uri)
        elif "://" in uri and scheme not in ("sqlite", "file", "databricks"):
            _connect_database(uri)
    except Exception as exc:  # requests', SQLAlchemy's or the driver's
        what = "server" if scheme in ("http", "https") else "database"
        advice = 'pip install -e ".[distributed]" (its driver)' if isinstance(exc, ImportError) else HINT
        raise MasklabError(f"MLflow's tracking {what} at {mask(uri)} cannot be used ({_why(exc)}): {advice}") from None


def _ask_server(uri: str) -> None:
    from mlflow import MlflowClient

    bounds = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(REACH_S)}
    saved = {k: os.environ.get(k) for k in bounds}
    os.environ.update(bounds)  # read at each request; only this one's
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v


def _connect_database(uri: str) -> None:
    import sqlalchemy

    timeout = {"connect_args": {"connect_timeout": REACH_S}} if uri.startswith(("postgresql", "mysql")) else {}
    engine = sqlalchemy.create_engine(uri, **timeout)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


HINT = "is it running, and are paths.tracking_uri (MLFLOW_TRACKING_URI) and its password right?"


def tracking_failure(exc: BaseException) -> str | None:
    """One line for ``exc`` when it is MLflow's tracking server or database not answering or refusing (MLflow's
    database errors are SQLAlchemy's, as the study's are), else None."""
    for e in causes(exc):
        if type(e).__name__ == "MlflowException" and (
            m := re.match(r"API request to (\S+?)/api/\S* failed with ", str(e))
        ):
            return f"MLflow's tracking server at {mask(m[1])} cannot be used ({_why(e)}): {HINT}"
        if type(e).__name__ in ("OperationalError", "InterfaceError") and raised_in(e, "mlflow"):
            return f"MLflow's tracking database cannot be used ({_why(e)}): {HINT}"
    return None


def _why(exc: BaseException) -> str:
    """The cause in a few words: the OS's (``Connection refused``), a timeout, or the first line of the error."""
    text = str(exc)
    if found := re.search(r"\[Errno -?\d+\] ([^'\")]+)|(timed out)", text):
        return next(g for g in found.groups() if g)
    return mask(re.sub(r"^\([\w.]+\) ", "", " ".join(first_line(exc).split())))  # less SQLAlchemy's "(psycopg.X) "


def open_client(tracking_uri: str, what: str):
    """An MlflowClient on ``tracking_uri``, or one line (starting with ``what``) when it names a SQLite file
    that does not exist (MLflow would create it empty, and every lookup would then say 'not found') or a store
    that does not answer."""
    from mlflow import MlflowClient

    from masklab import MasklabError

    uri = str(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise MasklabError(
            f"{what}no MLflow database at {uri[len('sqlite:///') :]}: train first, or point "
            "paths.tracking_uri (or MLFLOW_TRACKING_URI) at the sqlite:///<file> the runs went to"
        )
    _quiet_database_errors()
    try:
        reach(uri)
    except MasklabError as exc:
        raise MasklabError(f"{what}{exc}") from None
    return MlflowClient(uri)


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store live beside the database (MLflow's default is ./mlruns of the cwd);
    for a tracking server the server decides (None)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///") :]).resolve().parent / "mlruns").as_uri()
    return None


#: MLflow 3 opens an experiment without this kind in GenAI mode (an empty Traces page); with it, on its runs
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def experiment_id(client, name: str) -> str:
    """The id of MLflow experiment ``name``, created (artifacts beside a SQLite store) when missing."""
    exp = client.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    return client.create_experiment(
        name, artifact_location=artifact_location(client.tracking_uri), tags=dict([EXPERIMENT_KIND])
    )


def mark_model_training(client, exp_id: str) -> None:
    """Tag an experiment Lightning's logger created as model training, once (``mlflow ui`` then opens on its runs)."""
    key, kind = EXPERIMENT_KIND
    if client.get_experiment(exp_id).tags.get(key) is None:
        client.set_experiment_tag(exp_id, key, kind)


def flat_params(cfg: DictConfig) -> dict[str, object]:
    """Resolved config flattened to ``a.b.c`` keys (what MLflow shows as params). Of the ``model.net`` tree only
    the ``_target_`` of each node: its arguments are the short keys, logged under their own names."""
    out: dict[str, object] = {}

    def walk(node, prefix: str):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif not prefix.startswith("model.net.") or prefix.endswith("_target_."):
            out[prefix[:-1]] = node

    wiring = ("hparams_search", "callbacks", "module")  # the search space; wiring of keys logged by name
    walk({k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in wiring}, "")
    return out


@rank_zero_only  # DDP ranks > 0 hold Lightning's dummy experiment (get_run returned None there)
def log_params(logger, cfg: DictConfig) -> None:
    """Log the flattened config; a resumed run keeps its params and tags the ones that changed."""
    params = {k: mask(str(v))[:6000] for k, v in flat_params(cfg).items()}
    run = logger.experiment.get_run(logger.run_id)
    mark_model_training(logger.experiment, run.info.experiment_id)
    existing = run.data.params
    changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
    new = {k: v for k, v in params.items() if k not in existing}
    if new:
        logger.log_hyperparams(new)
    if changed:  # MLflow params are immutable: record what the resumed run changed as a tag
        logger.experiment.set_tag(
            logger.run_id,
            "resume_changed_params",
            ", ".join(f"{k}: {existing[k]} -> {params[k]}" for k in changed)[:5000],
        )


@rank_zero_only
def log_fit(logger, fit, data_digest: str | None = None) -> None:
    """The auto settings' values and reasons (``auto.txt``), what does not fit (tag ``data_advice``) and the
    anchor recall (metric ``data/anchor_recall``) of a :class:`masklab.data.auto.Fit`; which prepared data
    (tag ``data_digest``: runs on data prepared again differ there)."""
    client, run_id = logger.experiment, logger.run_id
    if data_digest:
        client.set_tag(run_id, "data_digest", data_digest)
    text = "\n".join(["# auto settings", *fit.lines(), "", "# what does not fit", *(fit.advice or ["nothing"])])
    client.log_text(run_id, text + "\n", "auto.txt")
    if fit.advice:
        client.set_tag(run_id, "data_advice", " | ".join(fit.advice)[:5000])
    for key in ("anchor_recall", "anchor_recall_auto", "below_half_smallest_anchor"):
        if key in fit.numbers:
            client.log_metric(run_id, f"data/{key}", float(fit.numbers[key]))


@rank_zero_only
def end_failed(logger, exc: BaseException | None = None) -> None:
    """Mark the run FAILED when training fails outside Lightning's fit/test (which finalize their own
    failures), writing the params logged asynchronously first (left to interpreter shutdown, MLflow printed
    "Failed to submit batch for logging" and the run stayed RUNNING). A pruned trial's run is not failed."""
    import mlflow

    if any(c.__name__ == "TrialPruned" for c in type(exc).__mro__):  # pruned or paused (optuna: imported lazily)
        return

    mlflow.flush_async_logging()
    logger.finalize("failed")


@rank_zero_only
def log_run_files(logger, cfg: DictConfig, best_ckpt: str | None, best_score) -> None:
    """Resolved config YAML as an artifact, best checkpoint path and score as tags; waits until the
    metrics logged asynchronously (``logger.synchronous: false``) are written, so the run is complete
    in the store when train.py prints where it is (and before a sweep reads it)."""
    import mlflow

    mlflow.flush_async_logging()
    client, run_id = logger.experiment, logger.run_id
    client.log_text(run_id, mask(OmegaConf.to_yaml(cfg, resolve=True)), "config.yaml")
    if best_ckpt:
        client.set_tag(run_id, "best_checkpoint", absolute(best_ckpt))
        client.set_tag(run_id, "host", hostname())  # where that file is, when it is not a shared folder or URL
    if best_score is not None:
        client.set_tag(run_id, "best_score", f"{float(best_score):.6f}")
