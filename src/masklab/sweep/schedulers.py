"""What decides the next trial: samplers and pruners from ``_target_`` YAML, and the two schedulers.

``hydra.sweeper.sampler=<name>`` and ``hydra.sweeper.pruner=<name>`` name a file of
``conf/hydra/sweeper/{sampler,pruner}/`` (its ``_target_`` and masklab's default kwargs; adding one is one file);
``sampler_kwargs`` / ``pruner_kwargs`` replace the file's kwargs when given. A pruner file whose target is
:class:`Asha` makes the sweeper schedule the trials itself; any other is an Optuna pruner that the trial's own
process consults after each validation (:class:`Scheduler`: the sampler proposes every trial).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import optuna
from hydra.utils import instantiate
from omegaconf import OmegaConf

from masklab import CONFIG_DIR, MasklabError
from masklab.sweep import asha


def node(kind: str, name, kwargs: dict | None = None) -> dict:
    """The ``_target_`` node of sampler/pruner ``name`` (a file's name or a node), ``kwargs`` replacing its own."""
    if not isinstance(name, str):
        base = OmegaConf.to_container(OmegaConf.create(name))
    elif (path := CONFIG_DIR / "hydra" / "sweeper" / kind / f"{name}.yaml").is_file():
        base = OmegaConf.to_container(OmegaConf.load(path))
    else:
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise MasklabError(f"hydra.sweeper.{kind}={name!r}: choose one of {known} (files in {path.parent})")
    if kwargs is None:
        return base
    return {k: v for k, v in base.items() if k.startswith("_")} | dict(kwargs)


def _build(kind: str, spec: dict, **extra):
    try:
        with warnings.catch_warnings():  # Optuna 4 calls constant_liar experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return instantiate(spec, **extra)
    except Exception as exc:  # Hydra wraps the TypeError of an unknown or missing kwarg
        cause = exc.__cause__ or exc
        raise MasklabError(f"hydra.sweeper.{kind}_kwargs for {spec['_target_'].rsplit('.', 1)[-1]}: {cause}") from None


def pruner_spec(name, kwargs: dict | None = None, epochs: int | None = None) -> dict:
    """The pruner's node; hyperband's ``max_resource: null`` becomes the trials' ``epochs`` (Optuna's "auto"
    waits for a completed trial before it prunes anything)."""
    spec = node("pruner", name, kwargs)
    if spec["_target_"].endswith("HyperbandPruner") and spec.get("max_resource", "auto") is None:
        spec["max_resource"] = int(epochs) if epochs else "auto"
    return spec


def make_pruner(spec: dict) -> optuna.pruners.BasePruner:
    """The Optuna pruner of a trial (Optuna's NopPruner under :class:`Asha`, which schedules instead)."""
    built = _build("pruner", spec)
    return optuna.pruners.NopPruner() if isinstance(built, Asha) else built


def grid_values(d) -> list | None:
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return list(d.choices)
    if isinstance(d, optuna.distributions.IntDistribution) and not d.log:
        return list(range(d.low, d.high + 1, d.step))
    if isinstance(d, optuna.distributions.FloatDistribution) and d.step:
        return [d.low + i * d.step for i in range(int(round((d.high - d.low) / d.step)) + 1)]
    return None  # a continuous interval has no grid


def space_size(dists: dict) -> int | None:
    """How many settings a space of finite distributions has (None when one is a continuous interval)."""
    values = [grid_values(d) for d in dists.values()]
    return None if any(v is None for v in values) else math.prod(len(v) for v in values)


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler calls ``study.stop()`` when the grid is done, which raises outside
    ``study.optimize`` (we ask and tell) before the trial's state is stored; ``n_trials`` is our stop."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def make_sampler(name, kwargs: dict | None, seed, dists: dict) -> optuna.samplers.BaseSampler:
    spec = node("sampler", name, kwargs)
    if spec["_target_"].endswith("GridSampler"):
        grid = {k: grid_values(d) for k, d in dists.items()}
        if bad := [k for k, v in grid.items() if v is None]:
            raise MasklabError(f"sampler=grid needs choice(...) or range(...) for every parameter; not: {bad}")
        return _build("sampler", spec, search_space=grid, seed=seed)
    return _build("sampler", spec, seed=seed)


class Scheduler:
    """Optuna's way: the sampler proposes every trial, and the pruner stops a bad one for good (in its job)."""

    rungs: list[int] | None = None

    def start(self, epochs: int | None, sweep_dir: Path, study_name: str, checkpoint_dir: str | None) -> None:
        pass

    def promotion(self, trials, maximize: bool) -> tuple[dict, dict] | None:
        """(params, attrs) of a trial to run before a new configuration, or None."""
        return None

    def started(self, trial: optuna.Trial) -> None:
        """A new configuration's first trial was asked for."""

    def new_configuration(self, t) -> bool:
        """Whether trial ``t`` spends the ``n_trials`` budget (configurations, not their resumes)."""
        return True

    def overrides(self, attrs: dict, number: int) -> list[str]:
        return []


class Asha(Scheduler):
    """ASHA (:mod:`masklab.sweep.asha`): pause every configuration at each rung, resume the rung's leaders from the
    checkpoint folder they paused in (``checkpoint_dir``, which every worker must see, or the sweep folder)."""

    def __init__(self, min_resource: int = 2, reduction_factor: int = 3):
        self.settings = asha.settings({"min_resource": min_resource, "reduction_factor": reduction_factor})

    def start(self, epochs, sweep_dir, study_name, checkpoint_dir) -> None:
        self.rungs = asha.rungs(int(epochs), **self.settings)
        self.sweep_dir, self.study_name, self.checkpoint_dir = Path(sweep_dir), study_name, checkpoint_dir

    def promotion(self, trials, maximize: bool) -> tuple[dict, dict] | None:
        sign, configs, params = (1 if maximize else -1), {}, {}
        for t in sorted(trials, key=lambda t: t.number):
            if "asha_root" not in t.user_attrs:
                continue
            root, rung = t.user_attrs["asha_root"], t.user_attrs["asha_rung"]
            c = configs.setdefault(root, asha.Config(root))
            params.setdefault(root, t.params)
            died = t.state == optuna.trial.TrialState.FAIL and "died" in t.user_attrs.get("fail_reason", "")
            if died and rung:  # a killed resume: the configuration still waits where it was
                continue
            c.values.update({step: sign * v for step, v in t.intermediate_values.items()})
            paused = t.state == optuna.trial.TrialState.PRUNED and t.user_attrs.get("asha_paused")
            c.paused_at = rung if paused else None  # its latest trial says whether it waits
        if (job := asha.promotion(list(configs.values()), self.rungs, self.settings["reduction_factor"])) is None:
            return None
        root, k = job
        note = f"resumes trial {root}, epochs {self.rungs[k] + 1}-{self.rungs[k + 1]}"
        return params[root], {"asha_root": root, "asha_rung": k + 1, "note": note}

    def started(self, trial: optuna.Trial) -> None:
        trial.set_user_attr("asha_root", trial.number)
        trial.set_user_attr("asha_rung", 0)

    def new_configuration(self, t) -> bool:
        return not t.user_attrs.get("asha_rung")

    def folder(self, root: int) -> str:
        if self.checkpoint_dir:
            return f"{str(self.checkpoint_dir).rstrip('/')}/{self.study_name}/{root}"
        return str(self.sweep_dir / str(root) / "checkpoints")

    def overrides(self, attrs: dict, number: int) -> list[str]:
        """A trial stops at its rung; a promoted one resumes its configuration's last checkpoint, in that
        configuration's folder (one history, one best checkpoint, one MLflow run per configuration)."""
        k, root = attrs["asha_rung"], attrs["asha_root"]
        out, folder = [f"sweep.stop_epoch={self.rungs[k]}"], self.folder(root)
        if self.checkpoint_dir:
            out += [f"callbacks.{c}.dirpath='{folder}'" for c in ("best_checkpoint", "last_checkpoint")]
        if k:
            out += [f"hydra.sweep.subdir={root}", f"resume='{folder}/last.ckpt'"]
        return out
