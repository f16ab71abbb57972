"""Study storage, crash recovery and the shared trial budget.

Storage: ``journal:<file>`` (Optuna's journal file storage, default: ``<sweep dir>/optuna.journal``;
it takes file locks, so several processes on one machine share it without "database is locked"),
or any RDB URL (``postgresql://…``, ``mysql://…``, ``sqlite:///…``) for workers on several machines.

Crash recovery: each trial records the host, pid and process start time of the worker running it.
At start, RUNNING trials of *this* host whose process is gone are marked FAIL (the kill of a sweep
mid-trial); on other hosts a trial is declared dead when its heartbeat (refreshed every validation
epoch; before the first, its start time) is older than ``stale_after_s``.

Budget: ``n_trials`` counts COMPLETE + PRUNED trials (FAIL ones are retried, up to ``max_failures``; a
COMPLETE trial that repeated an earlier one's parameters, not trained, does not count; with ``pruner=asha``, a trial
that resumes a paused configuration does not either: it counts configurations). Asking for a trial
happens under a lock file beside the storage, and a worker only asks while finished + running < ``n_trials``,
so workers never overshoot and trial numbers are distinct (Optuna numbers them in the storage).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import optuna
from filelock import FileLock
from optuna.trial import TrialState

from masklab import MasklabError
from masklab.sweep import asha

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "none": optuna.pruners.NopPruner,
    "asha": optuna.pruners.NopPruner,
}
#: pruners the sweeper runs itself: asha pauses and resumes trials (masklab.sweep.asha); Optuna prunes nothing
SWEEPER_PRUNERS = ("asha",)


#: our defaults when pruner_kwargs is null. median: no pruning before 3 finished trials nor in the
#: first epoch. percentile, the median's generalisation (``percentile`` 25 keeps the top quarter of the
#: finished trials' values at each step, 50 is the median): the same start. successive_halving: the
#: first rung at step 1 (the 2nd epoch; steps are epochs), which is what Optuna's min_resource="auto"
#: resolves to for any trial under 200 epochs, but "auto" only resolves once a trial has *completed*:
#: until then nothing is pruned and the first trial's rung values are never recorded, so the second
#: trial has no one to be compared with either (the change rests on that: on the pruning benchmark's
#: curves its measured effect was mixed, see RESULTS_NOTES.md).
#: hyperband: max_resource is the trials' epochs (see ``pruner_kwargs``) for the same reason: Optuna's
#: "auto" takes it from the first *completed* trial, and until then builds no brackets and prunes nothing.
PRUNER_DEFAULTS = {
    "median": {"n_startup_trials": 3, "n_warmup_steps": 1},
    "percentile": {"percentile": 25.0, "n_startup_trials": 3, "n_warmup_steps": 1},
    "successive_halving": {"min_resource": 1},
    "asha": dict(asha.DEFAULTS),
}


class StudySettingError(MasklabError):
    """A mistake in the study's own settings (not in the trial's sampled values): every trial would
    fail the same way, so the sweeper stops the study at the first instead of at ``max_failures``."""


def pruner_kwargs(name: str, kwargs: dict | None = None, epochs: int | None = None) -> dict:
    """The kwargs ``name``'s Optuna pruner is built with: ``kwargs``, or masklab's defaults when null
    (for hyperband: ``max_resource`` = ``epochs``, the most a trial reports, when known)."""
    if kwargs is not None:
        return dict(kwargs or {})
    defaults = dict(PRUNER_DEFAULTS.get(name, {}))
    if name == "hyperband" and epochs:
        defaults["max_resource"] = int(epochs)
    return defaults


def make_pruner(name: str, kwargs: dict | None = None) -> optuna.pruners.BasePruner:
    if name not in PRUNERS:
        raise MasklabError(f"hydra.sweeper.pruner={name!r}: choose one of {sorted(PRUNERS)}")
    if name in SWEEPER_PRUNERS:
        asha.settings(kwargs)  # the sweeper pauses trials itself: Optuna's pruner prunes nothing
        return PRUNERS[name]()
    try:
        return PRUNERS[name](**pruner_kwargs(name, kwargs))
    except TypeError as exc:
        raise MasklabError(f"hydra.sweeper.pruner_kwargs for {name}: {exc}") from None


def pruning_signal(metric: str, mode: str | None, direction: str) -> dict:
    """What a trial reports to its pruner: ``{"on": metric, "sign": +1 | -1}``.

    Optuna's pruners compare intermediate values in the study's direction, so a metric watched in
    the other direction (e.g. ``val/loss``, lower is better, for a study that maximizes AP) is
    reported negated. ``mode`` null: ``min`` for a metric named ``*loss*``, else ``max``.
    """
    mode = mode or ("min" if "loss" in metric.rsplit("/", 1)[-1] else "max")
    if mode not in ("min", "max"):
        raise MasklabError(f"hydra.sweeper.prune_mode={mode!r}: choose min or max (how {metric} improves)")
    return {"on": metric, "sign": 1 if (mode == "max") == (direction == "maximize") else -1}


def open_storage(spec: str):
    if spec.startswith("journal:"):
        path = Path(spec[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(
            str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path))
        )
        return optuna.storages.JournalStorage(backend)
    try:
        return optuna.storages.RDBStorage(spec, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # sqlalchemy: unparsable URL, missing driver, unreachable server
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MasklabError(
            f"hydra.sweeper.storage={spec}: Optuna cannot open it ({first}); give journal:<file> or a "
            "database URL such as sqlite:///optuna.db or postgresql://user:pw@host/db"
        ) from None


def lock_for(spec: str, sweep_dir: Path):
    """A cross-process lock for ask/count: beside a journal file, else in the sweep dir (one machine)."""
    # not "<journal>.lock": that name is Optuna's own lock of the journal file
    path = (
        Path(spec[len("journal:") :] + ".masklab-lock")
        if spec.startswith("journal:")
        else Path(sweep_dir) / "optuna.masklab-lock"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=600)


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def mark_owner(study: optuna.Study, trial: optuna.Trial) -> None:
    attrs = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "proc_start": _process_start(os.getpid()),
        "heartbeat": time.time(),
    }
    for k, v in attrs.items():
        study._storage.set_trial_system_attr(trial._trial_id, f"masklab_{k}", v)


def heartbeat(study: optuna.Study, trial_id: int) -> None:
    study._storage.set_trial_system_attr(trial_id, "masklab_heartbeat", time.time())


def is_stale(frozen: optuna.trial.FrozenTrial, stale_after_s: float) -> bool:
    a = frozen.system_attrs
    if a.get("masklab_host") == socket.gethostname() and a.get("masklab_pid") is not None:
        start = _process_start(int(a["masklab_pid"]))
        return start is None or (a.get("masklab_proc_start") is not None and abs(start - a["masklab_proc_start"]) > 1)
    # no heartbeat yet: a trial another machine has just asked for (its owner is written right after):
    # its age counts from its start, not from 1970 (which declared it dead at once)
    started = frozen.datetime_start.timestamp() if frozen.datetime_start else 0.0
    return time.time() - float(a.get("masklab_heartbeat", started)) > stale_after_s


WORKER_DIED = "worker died (killed or crashed) mid-trial"


def fail_stale(study: optuna.Study, stale_after_s: float) -> list[int]:
    """Mark RUNNING trials whose worker is gone FAIL (with the reason); return their numbers."""
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_stale(t, stale_after_s):
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", WORKER_DIED)
            with contextlib.suppress(Exception):  # another worker may have just marked it
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed.append(t.number)
    return failed


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {s.name: sum(t.state == s for t in trials) for s in TrialState}
