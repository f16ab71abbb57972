"""``hydra/sweeper=optuna``: a small Hydra Sweeper on Optuna >= 4: ask -> launch -> record, one trial at a time.

Why our own: the released ``hydra-optuna-sweeper`` (1.3) pins ``optuna<3`` and fails with SQLAlchemy 2, crashes on a
NaN objective, cannot prune or pause trials, restarts its count on resume and knows no workers on several machines.
Each trial is a ``train.py`` job launched through Hydra's launcher and ends COMPLETE; PRUNED (by the pruner, or
paused by ASHA: :mod:`.schedulers`); FAIL with its ``fail_reason`` (``max_failures`` of them in a session stop the
study); or COMPLETE untrained, with ``same_as``, when the sampler proposes a COMPLETE trial's parameters again
(optuna/optuna#2021; not counted in ``n_trials``; ``duplicates=train`` trains it). Workers share only the storage
(:mod:`.storage`); MLflow runs and the outcome: :mod:`masklab.track.study_runs`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from masklab import MasklabError, StudySettingError, causes, exit_on_error, first_line, secrets, user_message
from masklab.data.auto import resolved
from masklab.data.canonical import digest
from masklab.errors import on_interrupt, terminating
from masklab.model.trainer import free_memory, refuse_gpu_trials_without_gpu, refuse_multiprocess
from masklab.sweep import schedulers, space
from masklab.sweep.schedulers import Scheduler, build_pruner, grid_values, make_sampler, pruner_spec, space_size
from masklab.sweep.storage import INTERRUPTED, WORKER_DIED, Store, owner_host, unreachable
from masklab.track.outcome import NOT_PARAMS
from masklab.track.study_runs import Tracker

log = logging.getLogger("masklab.sweep")
State = optuna.trial.TrialState
#: settings proposed in a row that are already done, after which a study stops (a space the sampler has exhausted)
MAX_REPEATS = 20


@dataclass
class Session:
    """One worker's run of the study: what ``_start`` set up for the loop."""

    store: Store
    scheduler: Scheduler
    tracker: Tracker
    dists: dict
    fixed: list[str]  # overrides every trial gets
    key: list[str]  # the ones that make a trial's result (``fixed`` less where it ran): repeats must share them
    names: list[str]
    n_trials: int
    spec: str  # the storage, its password masked
    exhausted: bool = False  # every setting of a finite space is done


class OptunaSweeperBase(Sweeper):
    def __init__(self, study_name: str, storage: str | None = None, n_trials: int = 20, sampler="tpe", seed=None,
                 sampler_kwargs=None, pruner="asha", pruner_kwargs=None, objectives=None, directions=None,
                 max_failures: int = 5, stale_after_s: float = 120.0, heartbeat_s: float = 10.0,
                 checkpoint_dir: str | None = None, params=None, prune_on=None, prune_mode=None,
                 duplicates: str = "reuse", proxy: str | None = None):  # fmt: skip
        self.study_name, self.storage, self.n_trials, self.seed = study_name, storage, int(n_trials), seed
        self.sampler, self.sampler_kwargs = sampler, sampler_kwargs
        self.pruner, self.pruner_kwargs, self.prune_on, self.prune_mode = pruner, pruner_kwargs, prune_on, prune_mode
        self.objectives, self.directions = list(objectives or []), list(directions or [])
        self.max_failures, self.duplicates, self.params = int(max_failures), duplicates, dict(params or {})
        self.stale_after_s, self.heartbeat_s = float(stale_after_s), float(heartbeat_s)
        self.checkpoint_dir, self.proxy = checkpoint_dir, proxy

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context, self.sweep_dir = config, hydra_context, Path(config.hydra.sweep.dir)
        secrets.install()  # no password in a console line or log file, Optuna's and SQLAlchemy's included
        secrets.hide_storage(config, self.storage)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]):
        with exit_on_error(log):  # one line, no traceback (Hydra would print one)
            s = self._start(arguments)
            with on_interrupt(lambda: self._interrupted(s)):
                return self._sweep(s)

    def _interrupted(self, s: Session) -> None:
        """The trial it stopped ends FAIL, its MLflow run too, and the study's run KILLED; say how to go on."""
        stopped = ""
        if (trial_id := s.store.current) is not None and s.store.fail(trial_id, INTERRUPTED):
            trial = s.store.frozen(trial_id)
            s.tracker.dead_run(trial, INTERRUPTED)
            stopped = f" at trial {trial.number} (now FAIL)"
        s.tracker.finish(s.names, status="KILLED")
        log.warning("study %r interrupted%s: run the same command to go on (finished trials are kept)",
                    self.study_name, stopped)  # fmt: skip

    # ---- the loop: ask -> launch -> record -----------------------------------------------------------
    def _sweep(self, s: Session):
        failures, repeats, waited, ran = 0, 0, False, 0
        with s.store.heartbeat():
            while (trial := self._ask(s)) is not None:
                if isinstance(trial, str):  # the budget is taken, but other workers' trials may still fail
                    if not waited:
                        log.info("%s; waiting for them to end", trial)
                    waited = True
                    time.sleep(self.heartbeat_s)
                    continue
                ran += 1
                log.info("trial %d: %s", trial.number, " ".join(space.to_overrides(trial.params)))
                if trial.user_attrs.get("note"):
                    log.info("trial %d %s (asha)", trial.number, trial.user_attrs["note"])
                elif self._reused(s, trial):
                    repeats += 1
                    if repeats >= MAX_REPEATS:  # a sampler that only proposes what is done (an exhausted space)
                        log.warning("study %r: %d settings in a row were done; stopping", self.study_name, repeats)
                        break
                    continue
                repeats = 0
                state, setting_error = self._run(s, trial)
                failures += state == State.FAIL
                if setting_error or failures >= self.max_failures:
                    s.tracker.finish(s.names, status="FAILED")
                    raise MasklabError(
                        f"study {self.study_name!r} stopped at trial {trial.number}: {setting_error}"
                        if setting_error
                        else f"study {self.study_name!r} stopped: {failures} failed trials in this session "
                        f"(hydra.sweeper.max_failures={self.max_failures}); see the fail_reason of each trial above"
                    )
        if not ran and not s.exhausted:
            log.warning("study %r already has its n_trials=%d trials: none run; raise hydra.sweeper.n_trials to add "
                        "more (its results are below)", self.study_name, s.n_trials)  # fmt: skip
        return s.tracker.finish(s.names)

    def _ask(self, s: Session) -> optuna.Trial | str | None:
        """The next trial, or why to wait for other workers' trials, or None when the study is done."""
        if terminating():  # a SIGTERM whose exit Python swallowed (raised inside a weakref callback or __del__)
            raise SystemExit(143)

        def claim():
            with s.store.lock():  # every worker counts and claims under it: n_trials holds across machines
                return self._claim(s)

        trial = s.store.patiently(claim)  # a database that does not answer: waited for up to stale_after_s
        return s.store.patiently(lambda: s.store.trial(trial, s.dists)) if isinstance(trial, int) else trial

    def _claim(self, s: Session) -> int | str | None:
        """Under the lock: a new trial's id (its parameters drawn after), or why to wait, or None."""
        trials = s.store.fail_dead()
        maximize = s.store.study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        if (job := s.scheduler.promotion(trials, maximize)) is not None:
            return s.store.ask(params=job[0], dists=s.dists, fixed=s.key, **job[1])
        counted = [t for t in trials if t.state in (State.COMPLETE, State.PRUNED, State.RUNNING)]
        used = [t for t in counted if s.scheduler.new_configuration(t) and "same_as" not in t.user_attrs]
        running = [t for t in trials if t.state == State.RUNNING]
        if len(used) >= s.n_trials:
            if not running:
                return None
            hosts = ", ".join(f"{t.number} on {owner_host(t)}" for t in running)
            return f"all n_trials={s.n_trials} are started; trials {hosts} still run"
        size = space_size(s.dists) if self.duplicates == "reuse" else None
        if size is not None and len(self._trained(s, trials)) >= size:
            s.exhausted = True
            log.warning("study %r: all %d settings of the space have a COMPLETE trial; stopping before n_trials=%d",
                        self.study_name, size, s.n_trials)  # fmt: skip
            return None
        return s.store.ask(fixed=s.key, **s.scheduler.new_attrs)

    def _trained(self, s: Session, trials) -> dict[tuple, optuna.trial.FrozenTrial]:
        """The trained COMPLETE trials with this session's fixed overrides, by parameters (the first of each)."""
        out = {}
        for t in trials:
            if t.state == State.COMPLETE and "same_as" not in t.user_attrs and t.user_attrs.get("fixed") == s.key:
                out.setdefault(_key(t.params), t)
        return out

    def _reused(self, s: Session, trial: optuna.Trial) -> bool:
        """Tell ``trial`` a trained trial's values when it repeats its parameters (duplicates=reuse)."""
        trained = self._trained(s, s.store.trials(State.COMPLETE)) if self.duplicates == "reuse" else {}
        if (earlier := trained.get(_key(trial.params))) is None:
            return False
        reason = f"same parameters as trial {earlier.number}: its value, not trained again"
        s.tracker.repeat_run(trial, earlier)
        metrics = {"metrics": earlier.user_attrs["metrics"]} if "metrics" in earlier.user_attrs else {}
        values = earlier.values if len(earlier.values) > 1 else earlier.values[0]
        s.store.tell(trial, values, same_as=earlier.number, note=reason, **metrics)
        s.tracker.after_trial(trial, State.COMPLETE, reason)
        return True

    def _run(self, s: Session, trial: optuna.Trial) -> tuple[State, str | None]:
        overrides = [
            *s.fixed,
            *space.to_overrides(trial.params),
            f"sweep.study={self.study_name}",
            f"sweep.storage='{s.spec}'",
            *([f"sweep.proxy='{self.proxy}'"] if self.proxy else []),
            f"sweep.trial_id={s.store.trial_id(trial)}",
            f"sweep.trial_number={trial.number}",
            f"sweep.parent_run_id={s.tracker.parent_id or 'null'}",
            f"sweep.stale_after_s={self.stale_after_s}",
            f"sweep.heartbeat_s={self.heartbeat_s}",
            *s.scheduler.overrides(trial.user_attrs, trial.number),
        ]
        try:
            self.validate_batch_is_legal([overrides])
            (ret,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
            error = ret._return_value if ret.status == JobStatus.FAILED else None
            value = ret._return_value if ret.status == JobStatus.COMPLETED else None
        except Exception as exc:  # the overrides do not compose: that trial fails, the study goes on
            error, value = exc, None
        if terminating():  # its error is the stop's (a DataLoader worker killed by the same SIGTERM)
            raise SystemExit(143)
        try:
            return s.store.patiently(lambda: self._tell(s, trial, error, value))
        finally:
            error = ret = None  # a failed trial's traceback holds its model and activations: drop it, then free
            free_memory()

    def _tell(self, s: Session, trial: optuna.Trial, error, value) -> tuple[State, str | None]:
        if (told := s.store.frozen(trial)).state.is_finished():  # told already: by a retry, or failed as dead
            s.store.current, attrs = None, told.user_attrs
            if (reason := attrs.get("fail_reason", attrs.get("prune_reason", ""))) == WORKER_DIED:
                log.warning("trial %d was marked FAIL by another worker while it ran here (%s: was this machine "
                            "suspended or cut off from the database?); its result is dropped",
                            trial.number, reason)  # fmt: skip
            return s.tracker.after_trial(trial, told.state, reason), None
        if isinstance(error, optuna.TrialPruned):
            from masklab.callbacks.optuna_trial import TrialPaused  # Lightning (5 s): the trial has loaded it

            paused = {"asha_paused": True} if isinstance(error, TrialPaused) else {}
            s.store.tell(trial, state=State.PRUNED, prune_reason=str(error)[:2000], **paused)
            return s.tracker.after_trial(trial, State.PRUNED, str(error)), None
        if error is None:
            metrics = told.user_attrs.get("metrics", {})
            one = len(s.names) == 1 and value is not None
            values = [float(value)] if one else [metrics.get(n, math.nan) for n in s.names]
            bad = [n for n, v in zip(s.names, values) if v is None or not math.isfinite(v)]
            if not bad:
                s.store.tell(trial, values if len(values) > 1 else values[0])
                return s.tracker.after_trial(trial, State.COMPLETE, ""), None
            error = f"objective {bad} is NaN/inf (diverged, no validation ran, or its metrics did not reach the study)"
        setting = isinstance(error, BaseException) and any(isinstance(e, StudySettingError) for e in causes(error))
        if isinstance(error, BaseException) and (cut := unreachable(error)):  # Optuna's own words blame the data
            error = f"the study's database did not answer ({secrets.mask(first_line(cut))})"
        elif isinstance(error, BaseException):
            error = secrets.mask(user_message(error) or first_line(error, with_type=True))  # to the study and MLflow
        s.store.tell(trial, state=State.FAIL, fail_reason=error[:2000])
        return s.tracker.after_trial(trial, State.FAIL, error), error if setting else None

    # ---- the study's settings, checked before any trial -----------------------------------------------
    def _start(self, arguments: list[str]) -> Session:
        dists, fixed = self._space(arguments)
        names, dirs = self._objectives()
        spec = str(self.storage or f"journal:{self.sweep_dir / 'optuna.journal'}")
        pruning, optuna_pruner, scheduler = self._pruning(dists, names, dirs, spec)
        n_trials = self.n_trials
        sampler = make_sampler(self.sampler, self.sampler_kwargs, self.seed, dists)
        if isinstance(sampler, optuna.samplers.GridSampler) and n_trials > (size := space_size(dists)):
            log.warning("sampler=grid: the grid has %d points; n_trials=%d lowered to it", size, n_trials)
            n_trials = size
        store = Store(spec, self.sweep_dir, self.stale_after_s, self.heartbeat_s, proxy=self.proxy,
                      study_name=self.study_name, sampler=sampler, pruner=optuna_pruner, directions=dirs)  # fmt: skip
        trials, known = store.trials(), store.study.user_attrs.get("masklab_pruner", {})  # as the last session left it
        self._same_study(store, trials, known, dists, names, dirs)
        self._same_pruning(trials, known, pruning)
        tracker = Tracker(self.config, store, self.sweep_dir, fixed)
        store.on_dead = tracker.dead_run
        data = self._data(dists)  # a large dataset's annotations take a while to hash: not under the lock
        with store.lock():
            store.same_data(*data)
            store.same_checkpoints(scheduler.checkpoint_dir)
            tracker.open_parent()  # first: the trials failed below get their MLflow runs ended under it
            store.fail_dead()
            store.study.set_user_attr("masklab_pruner", pruning)
            store.new_session()
        trials = store.trials()
        done = sum(t.state in (State.COMPLETE, State.PRUNED) for t in trials)
        log.info("study %r (%s): %d finished of n_trials=%d; space %s",
                 self.study_name, secrets.mask(spec), done, n_trials, sorted(dists))  # fmt: skip
        key = [o for o in fixed if not o.startswith(NOT_PARAMS)]
        self._same_settings(trials, key)
        return Session(store, scheduler, tracker, dists, fixed, key, names, n_trials, secrets.mask(spec))

    def _same_study(self, store: Store, trials, known: dict, dists: dict, names: list[str], dirs: list[str]) -> None:
        """Refuse, before any trial, a session whose values would not rank with the study's trials (other objectives
        or directions: Optuna keeps the study's first ones) or that Optuna cannot mix with them (a parameter drawn
        from another kind of distribution, or other choices): a command line changed on a resume or another machine."""
        objectives, directions = known.get("objectives", names), store.study.directions
        if (objectives, [d.name.lower() for d in directions]) != (names, dirs):
            raise MasklabError(
                f"study {self.study_name!r} is to {_goal(objectives, directions)}, and this session to "
                f"{_goal(names, dirs)}: their values would not rank together; keep the study's objective, or start "
                "another study (hydra.sweeper.study_name=<new name>)"
            )
        for t in trials:
            for name in dists.keys() & t.distributions.keys():
                try:
                    optuna.distributions.check_distribution_compatibility(t.distributions[name], dists[name])
                except ValueError:
                    here, there = space.describe(dists[name]), space.describe(t.distributions[name])
                    raise MasklabError(
                        f"study {self.study_name!r}: {name} is {here} here, but trial {t.number} drew it from {there}, "
                        "and Optuna cannot mix the two in one study: keep its kind and choices (an interval's bounds "
                        "may change), or start another study (hydra.sweeper.study_name=<new name>)"
                    ) from None

    def _same_pruning(self, trials, known: dict, pruning: dict) -> None:
        """Say so when the study's trials were pruned otherwise (another pruner, its settings or its signal): the
        study ranks trials judged two ways, and a configuration ASHA paused is resumed only under ASHA."""
        if "spec" not in known or not trials or all(known.get(k) == pruning[k] for k in ("spec", "on", "sign")):
            return
        log.warning("study %r: its trials were pruned by %s; this session prunes by %s (a configuration asha paused "
                    "is resumed only under asha)", self.study_name, _pruner(known), _pruner(pruning))  # fmt: skip

    def _same_settings(self, trials, key: list[str]) -> None:
        """Say so when this session's fixed overrides are not those of the study's last trial (another machine's
        command line, or the study resumed with other settings): the study then ranks trials of unlike settings."""
        last = next((t for t in reversed(trials) if "fixed" in t.user_attrs), None)
        if last is None or last.user_attrs["fixed"] == key:
            return
        ran = last.user_attrs["fixed"]
        there, here = " ".join(sorted(set(ran) - set(key))) or "-", " ".join(sorted(set(key) - set(ran))) or "-"
        log.warning("study %r: trial %d ran with other fixed settings (%s; here: %s): the study ranks them together "
                    "(hydra.sweeper.study_name=<new name> for a study of their own)",
                    self.study_name, last.number, secrets.mask(there), secrets.mask(here))  # fmt: skip

    def _space(self, arguments: list[str]) -> tuple[dict, list[str]]:
        """The search space's distributions and the fixed overrides, the study's settings checked first."""
        for key, least in (("n_trials", 1), ("max_failures", 1)):
            if getattr(self, key) < least:  # 0 trials ran nothing and printed an empty table with exit 0
                raise MasklabError(f"hydra.sweeper.{key}={getattr(self, key)}: must be at least {least}")
        if self.duplicates not in ("reuse", "train"):
            raise MasklabError(f"hydra.sweeper.duplicates={self.duplicates}: choose reuse or train")
        dists, fixed = space.parse(self.config.get("hparams_search"), self.params, arguments)
        refuse_multiprocess(self.config, dists)
        refuse_gpu_trials_without_gpu(self.config, dists)
        if not dists:
            raise MasklabError(
                "the search space is empty: pick hparams_search=<file> or give sweeps like "
                "'optimizer.lr=tag(log,interval(1e-3,1e-1))' on the command line"
            )
        return dists, fixed

    def _pruning(self, dists, names, dirs, spec: str) -> tuple[dict, optuna.pruners.BasePruner, Scheduler]:
        """(what trials rebuild their pruner and signal from, Optuna's pruner, the scheduler), checked."""
        epochs = self._max_epochs(dists)
        pruner = pruner_spec(self.pruner, self.pruner_kwargs, epochs=epochs)
        optuna_pruner, scheduler = build_pruner(pruner)
        if len(names) > 1:  # and ASHA has no one ranking to promote by
            scheduler = Scheduler()
            if not pruner["_target_"].endswith("NopPruner"):
                log.warning("%d objectives: Optuna prunes single-objective studies only, so every trial runs in full "
                            "(hydra.sweeper.pruner=%s has no effect)", len(names), self.pruner)  # fmt: skip
        scheduler.start(epochs, self.sweep_dir, self.study_name, self.checkpoint_dir, dists=dists, spec=spec)
        mode = self.prune_mode or (None if self.prune_on else {"maximize": "max", "minimize": "min"}[dirs[0]])
        signal = schedulers.pruning_signal(self.prune_on or names[0], mode, dirs[0])
        return {"spec": pruner, **signal, "objectives": names}, optuna_pruner, scheduler

    def _data(self, dists) -> tuple[str | None, str]:
        """(digest, folder) of the prepared data every trial reads; (None, "") for generated data or a swept one."""
        folder = OmegaConf.select(self.config, "data.root", default=None)
        if folder is None or {"data", "data.name", "data.root"} & set(dists):
            return None, ""
        return digest(folder), str(folder)

    def _objectives(self) -> tuple[list[str], list[str]]:
        names = self.objectives or [self.config.optimized_metric]
        dirs = self.directions or ["maximize" if self.config.optimized_mode == "max" else "minimize"] * len(names)
        if len(dirs) != len(names):
            raise MasklabError(f"hydra.sweeper: {len(names)} objectives but {len(dirs)} directions")
        return names, dirs

    def _max_epochs(self, dists) -> int | None:
        """The most epochs a trial trains (hence reports): the top of a swept ``schedule.epochs``, else the config's."""
        if (d := dists.get("schedule.epochs")) is not None:
            return max(int(v) for v in grid_values(d) or [d.high])
        epochs = OmegaConf.select(resolved(self.config), "schedule.epochs", default=None)  # auto: from data.steps
        return int(epochs) if epochs not in (None, "auto") else None  # auto left: the data is not prepared yet


def _pruner(pruning: dict) -> str:
    """``MedianPruner(n_startup_trials=3, n_warmup_steps=1) on val/segm_AP`` of a study's ``masklab_pruner``."""
    spec = pruning.get("spec", {})
    kwargs = ", ".join(f"{k}={v}" for k, v in spec.items() if not k.startswith("_"))
    sign = "" if pruning.get("sign", 1) == 1 else " (negated)"
    return f"{spec.get('_target_', '?').rsplit('.', 1)[-1]}({kwargs}) on {pruning.get('on')}{sign}"


def _goal(names: list[str], directions: list) -> str:
    """``maximize val/segm_AP, minimize val/loss``."""
    return ", ".join(f"{getattr(d, 'name', d).lower()} {n}" for n, d in zip(names, directions))


def _key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))
