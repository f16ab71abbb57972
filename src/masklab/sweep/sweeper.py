"""``hydra/sweeper=optuna``: a small Hydra Sweeper on Optuna >= 4.

Why our own: the official ``hydra-optuna-sweeper`` 1.3 pins ``optuna<3``; with SQLAlchemy 2 its
SQLite storage fails with an ``AssertionError``; a NaN objective crashes the whole sweep; trials
cannot be pruned; and a resumed study restarts its trial count. This one asks Optuna for one trial
at a time, launches it through Hydra's launcher (so each trial is a normal ``train.py`` job with its
own output dir), and tells Optuna the outcome:

- COMPLETE with the returned ``optimized_metric`` (or several ``objectives`` for NSGA-II);
- PRUNED when the pruner stopped it (see :mod:`masklab.sweep.trial`);
- FAIL with the reason for an exception, an out-of-memory or a NaN objective; the study goes on
  until ``max_failures`` failures in one session stop it with a clear message;
- COMPLETE without training when the sampler proposes the parameters of a COMPLETE trial again (TPE's
  random start-up and a small categorical space do; Optuna's FAQ answer, optuna/optuna#2021): it gets that
  trial's values and ``same_as`` (its MLflow child run that run's params and metrics), and does not count
  against ``n_trials``; a study whose finite space has every setting done stops there (``duplicates=train``
  trains them again, for noisy GPU runs);
- with ``pruner=asha``, PRUNED with ``asha_paused`` at a rung, and resumed later by an enqueued trial
  when it ranks among the rung's leaders (:mod:`masklab.sweep.asha`).

Storage, crash recovery and the shared ``n_trials`` budget: :mod:`masklab.sweep.study`.
MLflow parent/child runs: :mod:`masklab.sweep.tracking`; the best-params YAML, plots and the summary:
:mod:`masklab.sweep.outcome`.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from masklab import MasklabError, causes, exit_on_error, missing_cuda, user_message
from masklab.data.auto import resolved
from masklab.sweep import asha, outcome, space, tracking
from masklab.sweep import study as st

log = logging.getLogger("masklab.sweep")


def _grid_values(d) -> list | None:
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return list(d.choices)
    if isinstance(d, optuna.distributions.IntDistribution) and not d.log:
        return list(range(d.low, d.high + 1, d.step))
    if isinstance(d, optuna.distributions.FloatDistribution) and d.step:
        return [d.low + i * d.step for i in range(int(round((d.high - d.low) / d.step)) + 1)]
    return None  # a continuous interval has no grid


def space_size(dists: dict) -> int | None:
    """How many settings a space of finite distributions has (None when one is a continuous interval)."""
    values = [_grid_values(d) for d in dists.values()]
    return None if any(v is None for v in values) else math.prod(len(v) for v in values)


#: settings proposed in a row that are already done, after which a study stops (a space the sampler has exhausted)
MAX_REPEATS = 20


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler calls ``study.stop()`` when the grid is done, which raises outside
    ``study.optimize`` (we ask and tell) before the trial's state is stored; ``n_trials`` is our stop."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "grid": _GridSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
}


class OptunaSweeperBase(Sweeper):
    def __init__(
        self,
        study_name: str,
        storage: str | None = None,
        n_trials: int = 20,
        sampler: str = "tpe",
        seed: int | None = None,
        sampler_kwargs: dict | None = None,
        pruner: str = "asha",
        pruner_kwargs: dict | None = None,
        objectives=None,
        directions=None,
        max_failures: int = 5,
        stale_after_s: float = 3600.0,
        params: dict | None = None,
        prune_on: str | None = None,
        prune_mode: str | None = None,
        duplicates: str = "reuse",
    ):
        self.study_name, self.storage, self.n_trials = study_name, storage, int(n_trials)
        self.sampler_name, self.seed, self.sampler_kwargs = sampler, seed, dict(sampler_kwargs or {})
        self.pruner_name = pruner
        self.pruner_kwargs = dict(pruner_kwargs) if pruner_kwargs is not None else None
        self.prune_on, self.prune_mode = prune_on, prune_mode
        self.objectives, self.directions = list(objectives or []), list(directions or [])
        self.max_failures, self.stale_after_s, self.params = int(max_failures), float(stale_after_s), dict(params or {})
        self._setting_error: str | None = None
        self.duplicates, self._exhausted = duplicates, False
        self._rungs: list[int] | None = None  # asha's rungs (epochs at which trials pause); None for other pruners
        self._eta = 3

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)

    # ---- the study -----------------------------------------------------------------------------
    def _sampler(self, dists):
        if self.sampler_name not in SAMPLERS:
            raise MasklabError(f"hydra.sweeper.sampler={self.sampler_name!r}: choose one of {sorted(SAMPLERS)}")
        kwargs = dict(self.sampler_kwargs)
        if self.sampler_name == "grid":
            grid = {k: _grid_values(d) for k, d in dists.items()}
            bad = [k for k, v in grid.items() if v is None]
            if bad:
                raise MasklabError(f"sampler=grid needs choice(...) or range(...) for every parameter; not: {bad}")
            kwargs["search_space"] = grid
            size = space_size(dists)
            if self.n_trials > size:
                log.warning("sampler=grid: the grid has %d points; n_trials=%d lowered to it", size, self.n_trials)
                self.n_trials = size
        if self.sampler_name == "tpe":  # several workers: a RUNNING trial counts as a bad one, so the others do not
            kwargs.setdefault("constant_liar", True)  # propose its setting (Optuna 5's default; 4 had it off)
        try:
            with warnings.catch_warnings():  # Optuna 4 calls constant_liar experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return SAMPLERS[self.sampler_name](seed=self.seed, **kwargs)
        except TypeError as exc:
            raise MasklabError(f"hydra.sweeper.sampler_kwargs for {self.sampler_name}: {exc}") from None

    def _objectives(self) -> tuple[list[str], list[str]]:
        names = self.objectives or [self.config.optimized_metric]
        dirs = self.directions or ["maximize" if self.config.optimized_mode == "max" else "minimize"] * len(names)
        if len(dirs) != len(names):
            raise MasklabError(f"hydra.sweeper: {len(names)} objectives but {len(dirs)} directions")
        return names, dirs

    def _open(self, dists) -> tuple[optuna.Study, str]:
        spec = self.storage or f"journal:{self.sweep_dir / 'optuna.journal'}"
        # resolved here, stored below: every trial rebuilds the same pruner whatever its own schedule.epochs
        kwargs = st.pruner_kwargs(self.pruner_name, self.pruner_kwargs, epochs=self._max_epochs(dists))
        pruner = st.make_pruner(self.pruner_name, kwargs)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=st.open_storage(spec),
            sampler=self._sampler(dists),
            pruner=pruner,
            directions=self._objectives()[1],
            load_if_exists=True,
        )
        # trials decide on pruning in their own process (maybe elsewhere): they rebuild the pruner from this
        names, dirs = self._objectives()
        # by default the pruner watches the objective, in the objective's own direction
        signal = st.pruning_signal(
            self.prune_on or names[0],
            self.prune_mode or (None if self.prune_on else {"maximize": "max", "minimize": "min"}[dirs[0]]),
            dirs[0],
        )
        study.set_user_attr(
            "masklab_pruner", {"name": self.pruner_name, "kwargs": kwargs, **signal, "objectives": names}
        )
        # several objectives: Optuna prunes nothing and asha would have no one ranking (the warning below)
        self._rungs = (
            self._asha_rungs(dists, kwargs) if self.pruner_name in st.SWEEPER_PRUNERS and len(names) == 1 else None
        )
        if len(names) > 1 and self.pruner_name != "none":
            log.warning(
                "%d objectives: Optuna prunes single-objective studies only, so every trial runs in full "
                "(hydra.sweeper.pruner=%s has no effect)",
                len(names),
                self.pruner_name,
            )
        return study, spec

    def _asha_rungs(self, dists, kwargs: dict) -> list[int]:
        if "schedule.epochs" in dists:
            raise MasklabError(
                "hydra.sweeper.pruner=asha pauses every trial at the same epochs: sweep schedule.epochs "
                "with another pruner, or fix it"
            )
        epochs = self._max_epochs(dists)
        if not epochs and OmegaConf.select(self.config, "schedule.epochs", default=None) == "auto":
            raise MasklabError(
                f"schedule.epochs=auto comes from the prepared data's statistics, and "
                f"{self.config.data.get('root')} has none yet: prepare the data first "
                "(python src/prepare.py data=<its option>)"
            )
        if not epochs:
            raise MasklabError("hydra.sweeper.pruner=asha needs schedule.epochs (the last rung)")
        settings = asha.settings(kwargs)
        self._eta = int(settings["reduction_factor"])
        return asha.rungs(int(epochs), **settings)

    def _max_epochs(self, dists) -> int | None:
        """The most epochs a trial trains (hence reports): the top of a swept ``schedule.epochs``, else the config's."""
        d = dists.get("schedule.epochs")
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            return max(int(c) for c in d.choices)
        if d is not None:
            return int(d.high)
        epochs = OmegaConf.select(resolved(self.config), "schedule.epochs", default=None)  # auto: from data.steps
        return int(epochs) if epochs not in (None, "auto") else None  # auto left: the data is not prepared yet

    def sweep(self, arguments: list[str]):
        with exit_on_error(log):  # one line, no traceback (Hydra would print one)
            return self._sweep(arguments)

    def _sweep(self, arguments: list[str]):
        study, spec, dists, fixed = self._start(arguments)
        failures, ran, repeats = 0, 0, 0
        while (trial := self._ask(study, spec, dists)) is not None:
            ran += 1
            log.info("trial %d: %s", trial.number, " ".join(space.to_overrides(trial.params)))
            promoted = bool(self._rungs) and bool(trial.user_attrs.get("asha_rung"))
            repeats = repeats + 1 if not promoted and self._reused(study, trial) else 0
            if repeats >= MAX_REPEATS:  # a sampler that only proposes what is done (an exhausted space)
                log.warning(
                    "study %r: the sampler proposed %d settings in a row that are done; stopping here",
                    self.study_name,
                    repeats,
                )
                break
            if repeats:
                continue
            if promoted:
                log.info(
                    "trial %d resumes trial %d's configuration at epoch %d (asha rung %d of %d)",
                    trial.number,
                    trial.user_attrs["asha_root"],
                    self._rungs[trial.user_attrs["asha_rung"] - 1],
                    trial.user_attrs["asha_rung"],
                    len(self._rungs) - 1,
                )
            state = self._run(study, trial, fixed, spec, self.tracker.parent_id)
            failures += state == optuna.trial.TrialState.FAIL
            if self._setting_error:  # every further trial would fail the same way
                self.tracker.finish(names=self._objectives()[0], complete=False)
                raise MasklabError(f"study {self.study_name!r} stopped at trial {trial.number}: {self._setting_error}")
            if failures >= self.max_failures:
                self.tracker.finish(names=self._objectives()[0], complete=False)
                raise MasklabError(
                    f"study {self.study_name!r} stopped: {failures} failed trials in this session "
                    f"(hydra.sweeper.max_failures={self.max_failures}); see the fail_reason of each trial above"
                )
        if not ran and not self._exhausted:
            log.warning(
                "study %r already has its n_trials=%d trials: none run; raise hydra.sweeper.n_trials to add "
                "more (its results are below)",
                self.study_name,
                self.n_trials,
            )
        return self.tracker.finish(names=self._objectives()[0], complete=True)

    def _start(self, arguments: list[str]):
        """Check the settings and the space, open the study (failing trials a dead worker left RUNNING), and its
        MLflow parent run: (study, storage spec, distributions, fixed overrides)."""
        for key, least in (("n_trials", 1), ("max_failures", 1)):
            if getattr(self, key) < least:  # 0 trials ran nothing and printed an empty table with exit 0
                raise MasklabError(f"hydra.sweeper.{key}={getattr(self, key)}: must be at least {least}")
        if self.duplicates not in ("reuse", "train"):
            raise MasklabError(f"hydra.sweeper.duplicates={self.duplicates}: choose reuse or train")
        dists, fixed = space.parse(self.config.get("hparams_search"), self.params, arguments)
        _refuse_multiprocess_trials(self.config, dists)
        _refuse_gpu_trials_without_gpu(self.config, dists)
        if not dists:
            raise MasklabError(
                "the search space is empty: pick hparams_search=<file> or give sweeps like "
                "'optimizer.lr=tag(log,interval(1e-3,1e-1))' on the command line"
            )
        study, spec = self._open(dists)
        with st.lock_for(spec, self.sweep_dir):
            for number in st.fail_stale(study, self.stale_after_s):
                log.warning("trial %d was left RUNNING by a worker that is gone: marked FAIL", number)
            # A seeded sampler draws the same sequence in every process: a resumed study re-proposed trial 0's
            # parameters, and two workers started together trained the same ones side by side. The study's first
            # session keeps the seed (a study run in one go is reproducible); later ones and other workers draw afresh.
            session = int(study.user_attrs.get("masklab_sessions", 0))
            study.set_user_attr("masklab_sessions", session + 1)
            if session:
                study.sampler.reseed_rng()
            self.tracker = tracking.Tracker(self.config, study, self.sweep_dir, fixed)
        log.info(
            "study %r (%s): %s finished of n_trials=%d; space %s",
            self.study_name,
            spec,
            sum(st.counts(study)[s.name] for s in st.FINISHED),
            self.n_trials,
            sorted(dists),
        )
        self._fixed = [o for o in fixed if not o.startswith(outcome.NOT_PARAMS)]  # what the trials share
        return study, spec, dists, fixed

    def _ask(self, study: optuna.Study, spec: str, dists):
        with st.lock_for(spec, self.sweep_dir):
            if self._rungs and (job := self._promotion(study)) is not None:
                root, k = job  # resume a paused configuration before starting a new one (ASHA)
                study.enqueue_trial(
                    study._storage.get_trial(
                        study._storage.get_trial_id_from_study_id_trial_number(study._study_id, root)
                    ).params,
                    skip_if_exists=False,
                    user_attrs={
                        "asha_root": root,
                        "asha_rung": k + 1,
                        "note": f"resumes trial {root}, epochs {self._rungs[k] + 1}-{self._rungs[k + 1]}",
                    },
                )
                trial = study.ask(dists)
                st.mark_owner(study, trial)
                return trial
            c = st.counts(study)
            trials = study.get_trials(deepcopy=False)
            reused = sum("same_as" in t.user_attrs for t in trials)
            # asha: n_trials counts configurations, not the trials that resume them
            resumed = sum(
                bool(t.user_attrs.get("asha_rung")) for t in trials if t.state != optuna.trial.TrialState.FAIL
            )
            if c["COMPLETE"] - reused - resumed + c["PRUNED"] + c["RUNNING"] >= self.n_trials:
                return None
            if self.duplicates == "reuse" and (size := space_size(dists)) is not None:
                if len(self._trained(study)) >= size:
                    self._exhausted = True
                    log.warning(
                        "study %r: all %d settings of the space have a COMPLETE trial; stopping before n_trials=%d",
                        self.study_name,
                        size,
                        self.n_trials,
                    )
                    return None
            trial = study.ask(dists)
            st.mark_owner(study, trial)
            if self._rungs:
                trial.set_user_attr("asha_root", trial.number)
                trial.set_user_attr("asha_rung", 0)
            return trial

    def _promotion(self, study: optuna.Study) -> tuple[int, int] | None:
        """ASHA's next promotion from the study's trials: (the configuration's first trial number, rung)."""
        sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
        configs: dict[int, asha.Config] = {}
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
            if "asha_root" not in t.user_attrs:
                continue
            c = configs.setdefault(t.user_attrs["asha_root"], asha.Config(t.user_attrs["asha_root"]))
            if (
                t.state == optuna.trial.TrialState.FAIL
                and t.user_attrs.get("fail_reason") == st.WORKER_DIED
                and t.user_attrs["asha_rung"]
            ):  # a killed resume: the configuration still waits where it was
                continue
            c.values.update({step: sign * v for step, v in t.intermediate_values.items()})
            # the configuration's latest trial says whether it waits: a paused one, not a failed or running one
            c.paused_at = (
                t.user_attrs["asha_rung"]
                if t.state == optuna.trial.TrialState.PRUNED and t.user_attrs.get("asha_paused")
                else None
            )
        return asha.promotion(list(configs.values()), self._rungs, self._eta)

    # ---- one trial -----------------------------------------------------------------------------
    @staticmethod
    def _key(params: dict) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in params.items()))

    def _trained(self, study: optuna.Study) -> dict[tuple, optuna.trial.FrozenTrial]:
        """The trained COMPLETE trials with this session's fixed overrides, by parameters (the first of each)."""
        trained = {}
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if "same_as" not in t.user_attrs and t.user_attrs.get("fixed") == self._fixed:
                trained.setdefault(self._key(t.params), t)
        return trained

    def _reused(self, study: optuna.Study, trial: optuna.Trial) -> bool:
        """Tell ``trial`` the values of a COMPLETE trial with its parameters, if there is one (and duplicates=reuse);
        else mark it with the fixed overrides that a later repeat of its parameters must share."""
        earlier = self._trained(study).get(self._key(trial.params)) if self.duplicates == "reuse" else None
        if earlier is None:
            trial.set_user_attr("fixed", self._fixed)
            return False
        self._reuse(study, trial, earlier)
        return True

    def _reuse(self, study: optuna.Study, trial: optuna.Trial, earlier: optuna.trial.FrozenTrial) -> None:
        reason = f"same parameters as trial {earlier.number}: its value, not trained again"
        trial.set_user_attr("same_as", earlier.number)
        trial.set_user_attr("fixed", self._fixed)
        trial.set_user_attr("note", reason)
        if "metrics" in earlier.user_attrs:
            trial.set_user_attr("metrics", earlier.user_attrs["metrics"])
        self.tracker.repeat_run(trial, earlier)
        study.tell(trial, earlier.values if len(earlier.values) > 1 else earlier.values[0])
        self.tracker.after_trial(trial, optuna.trial.TrialState.COMPLETE, reason)

    def _run(self, study: optuna.Study, trial: optuna.Trial, fixed, spec: str, parent: str | None):
        overrides = [
            *fixed,
            *space.to_overrides(trial.params),
            f"sweep.study={self.study_name}",
            f"sweep.storage='{spec}'",
            f"sweep.trial_id={trial._trial_id}",
            f"sweep.trial_number={trial.number}",
            f"sweep.parent_run_id={parent or 'null'}",
            *self._asha_overrides(trial),
        ]
        try:
            self.validate_batch_is_legal([overrides])
            (ret,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
            outcome = ret._return_value if ret.status == JobStatus.FAILED else None
            value = ret._return_value if ret.status == JobStatus.COMPLETED else None
        except Exception as exc:  # the overrides do not compose: that trial fails, the study goes on
            outcome, value = exc, None
        try:
            return self._tell(study, trial, outcome, value)
        finally:
            # A failed trial's exception (here and in the JobReturn) holds its traceback, whose frames hold the
            # model and the batch's activations: freed only once it is dropped. Freeing while it was still held
            # here left all of it: on an H100 capped at 4 GiB, a trial out of memory kept 3.9 GiB allocated
            # after gc and empty_cache, cached away from the other workers on that GPU.
            outcome = ret = None
            _free_memory()

    def _asha_overrides(self, trial: optuna.Trial) -> list[str]:
        """A trial of an asha study stops at its rung; a promoted one resumes its configuration's last checkpoint
        in that configuration's folder (one history, one best checkpoint, one MLflow run per configuration)."""
        if not self._rungs:
            return []
        k, root = trial.user_attrs["asha_rung"], trial.user_attrs["asha_root"]
        out = [f"sweep.stop_epoch={self._rungs[k]}"]
        if k:
            out += [
                f"hydra.sweep.subdir={root}",
                f"resume='{self.sweep_dir / str(root) / 'checkpoints' / 'last.ckpt'}'",
            ]
        return out

    def _tell(self, study: optuna.Study, trial: optuna.Trial, error, value):
        names, _ = self._objectives()
        State = optuna.trial.TrialState
        if isinstance(error, optuna.TrialPruned):
            trial.set_user_attr("prune_reason", str(error)[:2000])
            study.tell(trial, state=State.PRUNED)
            return self.tracker.after_trial(trial, State.PRUNED, str(error))
        if error is None:
            metrics = study._storage.get_trial(trial._trial_id).user_attrs.get("metrics", {})
            values = (
                [float(value)] if len(names) == 1 and value is not None else [metrics.get(n, math.nan) for n in names]
            )
            bad = [n for n, v in zip(names, values) if v is None or not math.isfinite(v)]
            if not bad:
                study.tell(trial, values if len(values) > 1 else values[0])
                return self.tracker.after_trial(trial, State.COMPLETE, "")
            error = f"objective {bad} is NaN/inf (diverged, or no validation ran)"
        reason = (
            error
            if isinstance(error, str)
            else user_message(error) or (f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        )
        trial.set_user_attr("fail_reason", reason[:2000])
        setting = isinstance(error, BaseException) and any(isinstance(e, st.StudySettingError) for e in causes(error))
        self._setting_error = reason if setting else None
        study.tell(trial, state=State.FAIL)
        return self.tracker.after_trial(trial, State.FAIL, reason)


#: Lightning strategies that run a trial in several processes
MULTIPROCESS = ("ddp", "fsdp", "deepspeed")


def _refuse_multiprocess_trials(config, dists) -> None:
    """A trial of a sweep runs in one process. Lightning's DDP launcher starts the other ranks by
    re-running the command line, which in a sweep re-runs the *sweep*: each rank becomes a worker that
    asks for its own trial, and ranks of different trials join one process group and train as one
    (seen on CPU with gloo; Lightning-AI/pytorch-lightning#11300 and #15689, facebookresearch/hydra#2070).
    Parallel workers, one per GPU, are the sweep's way to use several GPUs."""
    t = config.get("trainer") or {}
    strategy = str(t.get("strategy", "auto"))
    several = str(t.get("devices", 1)) not in ("1", "[0]") or int(t.get("num_nodes", 1) or 1) > 1
    swept = [str(c) for c in getattr(dists.get("trainer"), "choices", ())]
    if strategy.startswith(MULTIPROCESS) and several:
        what = f"trainer.strategy={strategy} with devices={t.get('devices')}, num_nodes={t.get('num_nodes', 1)}"
    elif any(c.startswith(MULTIPROCESS) for c in swept):
        what = f"trainer=choice({','.join(swept)})"
    else:
        return
    raise MasklabError(
        f"{what} in a sweep: each trial runs in one process "
        "(Lightning's DDP launcher would re-run the sweep in every rank). Use the GPUs as parallel workers, "
        "one per GPU on the same study: CUDA_VISIBLE_DEVICES=<i> python src/train.py -m hydra/sweeper=optuna "
        "trainer=gpu ... (README: Parallel workers)"
    )


def _refuse_gpu_trials_without_gpu(config, dists) -> None:
    """``trainer=gpu`` on a machine with no CUDA GPU: every trial failed the same way until max_failures."""
    accelerator = (config.get("trainer") or {}).get("accelerator", "cpu")
    if "trainer" not in dists and missing_cuda(accelerator):  # a swept trainer may still pick cpu
        raise MasklabError(
            f"trainer.accelerator={accelerator}: no CUDA GPU is visible here, so no trial could run; "
            "use trainer=cpu (or trainer.accelerator=auto)"
        )


def _free_memory() -> None:
    """A failed (e.g. out-of-memory) trial must not leave its tensors to the next one, nor its cached GPU
    memory to the other workers on the GPU (the caller has dropped the trial's exception first)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
