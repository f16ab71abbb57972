"""``hydra.sweeper.pruner=asha``: asynchronous successive halving that *pauses* trials and resumes them.

Optuna's pruners (median, percentile, successive halving, Hyperband) stop a trial for good, and only
once it trails trials that ran before it: a trial that is the best so far always trains to its last
epoch, so on a study whose records come one after another most epochs go to trials that are later
beaten (benchmarks/RESULTS_NOTES.md: on the pruning benchmark no such pruner can go below ~0.5 of the
unpruned study's epochs). ASHA as published (Li et al., "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020) pauses each trial at every rung (``min_resource *
reduction_factor**k`` epochs, and the trial's last epoch) and resumes it from its checkpoint only
when it ranks in the top ``1 / reduction_factor`` of the trials that reached that rung; otherwise the
worker starts a new configuration. Optuna has no paused state, so here every *segment* of training
is an Optuna trial:

- a new configuration is a trial sampled as usual that trains epochs ``[0, rung 0)`` and ends PRUNED
  with ``asha_paused`` (``trial_state=PRUNED`` in MLflow while it waits, as pruned ones do);
- a promotion is a trial *enqueued* with the configuration's parameters that resumes its
  ``checkpoints/last.ckpt`` in the configuration's own folder (one folder, one history.csv and one
  MLflow run per configuration) and trains to the next rung; the last rung ends COMPLETE.

Each trial records ``asha_root`` (the number of its configuration's first trial) and ``asha_rung``. A
configuration is ranked at a rung by what it reported for that rung's last epoch. ``n_trials``
counts configurations; the study ends when all are started and no paused one is promotable. This
module is the decision only (``promotion``), shared by the sweeper and the pruning benchmark's replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from masklab import MasklabError

DEFAULTS = {"min_resource": 2, "reduction_factor": 3}


def settings(kwargs: dict | None = None) -> dict:
    """``hydra.sweeper.pruner_kwargs`` for asha over its defaults, checked (unknown keys, values)."""
    unknown = sorted(set(kwargs or {}) - set(DEFAULTS))
    if unknown:
        raise MasklabError(f"hydra.sweeper.pruner_kwargs for asha: unknown {unknown}; it takes {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **(kwargs or {})}
    rungs(2, **out)  # checks the values
    return out


def rungs(epochs: int, min_resource: int = 2, reduction_factor: int = 3) -> list[int]:
    """Epoch counts at which a trial pauses, ending with ``epochs`` (its last): 2, 6, 12 for 12 epochs."""
    if int(min_resource) < 1 or int(reduction_factor) < 2:
        raise MasklabError(
            f"hydra.sweeper.pruner_kwargs for asha: min_resource={min_resource} must be >= 1 and "
            f"reduction_factor={reduction_factor} >= 2"
        )
    out, r = [], int(min_resource)
    while r < epochs:
        out.append(r)
        r *= int(reduction_factor)
    return out + [int(epochs)]


@dataclass
class Config:
    """One configuration as ASHA sees it: its reported values (step -> value, larger is better) and
    whether it is waiting at the end of a rung (``paused_at``: the rung's index; None when it is
    running, finished, failed, or already promoted)."""

    root: int
    values: dict[int, float] = field(default_factory=dict)
    paused_at: int | None = None


def promotion(configs: list[Config], rung_epochs: list[int], reduction_factor: int) -> tuple[int, int] | None:
    """``(root, rung index)`` of the paused configuration to resume next, or None: the highest rung first,
    and there the best configuration among the top ``n // reduction_factor`` of the ``n`` that reached
    it that is waiting there (ASHA's ``get_job``). Ties go to the earlier configuration."""
    for k in range(len(rung_epochs) - 2, -1, -1):
        step = rung_epochs[k] - 1
        reached = sorted((c for c in configs if step in c.values), key=lambda c: (-c.values[step], c.root))
        top = reached[: len(reached) // int(reduction_factor)]
        waiting = [c for c in top if c.paused_at == k]
        if waiting:
            return waiting[0].root, k
    return None


def simulate(curves: list[list[float]], rung_epochs: list[int], reduction_factor: int) -> list[tuple[int, int, int]]:
    """The segments a single worker trains with ASHA on configurations whose curves (value per epoch,
    larger is better) are known: ``(config index, first epoch, end epoch)`` in order. A curve shorter
    than a rung (a trial that failed or diverged) stops there. Used by the pruning benchmark's replay."""
    configs: list[Config] = []
    out = []
    started = 0
    while True:
        job = promotion(configs, rung_epochs, reduction_factor)
        if job is not None:
            c = next(c for c in configs if c.root == job[0])
            k, c.paused_at = job[1] + 1, None
            begin = rung_epochs[job[1]]
        elif started < len(curves):
            c, k, begin = Config(started), 0, 0
            configs.append(c)
            started += 1
        else:
            return out
        end = min(rung_epochs[k], len(curves[c.root]))
        c.values.update({e: curves[c.root][e] for e in range(begin, end)})
        out.append((c.root, begin, end))
        if end == rung_epochs[k] and k < len(rung_epochs) - 1:
            c.paused_at = k
