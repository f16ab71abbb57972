"""What decides the next trial: samplers and pruners from ``_target_`` YAML, and the two schedulers.

``hydra.sweeper.{sampler,pruner}=<name>`` names a file of ``conf/hydra/sweeper/{sampler,pruner}/`` (its ``_target_``
and masklab's kwargs, which ``{sampler,pruner}_kwargs`` replace). A pruner whose target is a :class:`Scheduler`
(ASHA) makes the sweeper schedule trials itself; an Optuna pruner is consulted by each trial after validation.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import optuna
from hydra.utils import instantiate
from omegaconf import OmegaConf

from masklab import CONFIG_DIR, MasklabError
from masklab.paths import filesystem


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


def pruning_signal(metric: str, mode: str | None, direction: str) -> dict:
    """What a trial reports to its pruner: ``{"on": metric, "sign": +1 | -1}``. Optuna's pruners compare values in
    the study's direction, so a metric watched the other way (``val/loss`` in a study that maximizes AP) is
    reported negated. ``mode`` null: ``min`` for a metric named ``*loss*``, else ``max``."""
    mode = mode or ("min" if "loss" in metric.rsplit("/", 1)[-1] else "max")
    if mode not in ("min", "max"):
        raise MasklabError(f"hydra.sweeper.prune_mode={mode!r}: choose min or max (how {metric} improves)")
    return {"on": metric, "sign": 1 if (mode == "max") == (direction == "maximize") else -1}


def build_pruner(spec: dict) -> tuple[optuna.pruners.BasePruner, Scheduler]:
    """(the Optuna pruner, the scheduler) of a pruner file: (NopPruner, it) when it builds a :class:`Scheduler`
    (ASHA), else (it, Optuna's way)."""
    built = _build("pruner", spec)
    return (optuna.pruners.NopPruner(), built) if isinstance(built, Scheduler) else (built, Scheduler())


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

    new_attrs: dict = {}  # what a new configuration's trial is created with
    checkpoint_dir: str | None = None  # where trials keep their checkpoints (set by start; None: their own folders)

    def start(self, epochs: int | None, sweep_dir: Path, study_name: str, checkpoint_dir: str | None,
              dists: dict | None = None, spec: str = "") -> None:  # fmt: skip
        """The study opens: check what this scheduler needs of it (``dists``: the space; ``spec``: the storage)."""
        self.sweep_dir, self.study_name = Path(sweep_dir), study_name
        # file:// as a plain path (Lightning turns that URL into a folder named 'file:'), ~ expanded as Lightning does
        folder = str(checkpoint_dir or "").rstrip("/").removeprefix("file://")
        self.checkpoint_dir = os.path.expanduser(folder) if folder else None
        if folder:  # a URL's fsspec package missing: every trial would fail (and fsspec's imports: not under a lock)
            filesystem(folder, "hydra.sweeper.checkpoint_dir")

    def promotion(self, trials, maximize: bool) -> tuple[dict, dict] | None:
        """(params, attrs) of a trial to run before a new configuration, or None."""
        return None

    def new_configuration(self, t) -> bool:
        """Whether trial ``t`` spends the ``n_trials`` budget: configurations, not their resumes (an ASHA promotion,
        also in a study pruned otherwise since)."""
        return not t.user_attrs.get("asha_rung")

    def folder(self, root: int) -> str:
        """Where configuration ``root`` keeps its checkpoints: ``checkpoint_dir``, or its folder of the sweep."""
        if self.checkpoint_dir:
            return f"{self.checkpoint_dir}/{self.study_name}/{root}"
        return str(self.sweep_dir / str(root) / "checkpoints")

    def overrides(self, attrs: dict, number: int) -> list[str]:
        """With a ``checkpoint_dir``, the trial's checkpoints go there: every machine can evaluate the winner."""
        if not self.checkpoint_dir:
            return []
        return [f"callbacks.{c}.dirpath='{self.folder(number)}'" for c in ("best_checkpoint", "last_checkpoint")]
