"""``hydra.sweeper.pruner=asha``: asynchronous successive halving that *pauses* trials and resumes them.

Optuna's pruners stop a trial for good, and the best-so-far one always trains to its end: none went below ~0.5 of
the unpruned study's epochs on the pruning benchmark. ASHA (Li et al., MLSys 2020) pauses each configuration at
every rung (``min_resource * reduction_factor**k`` epochs, and the last) and resumes it from its checkpoint only
when it ranks in the top ``1 / reduction_factor`` there. Optuna has no paused state, so each *segment* is a trial:
a new configuration ends PRUNED with ``asha_paused`` at rung 0; a promotion is a trial with its parameters,
``asha_root`` (:func:`asha_root`) and ``asha_rung``, resuming ``last.ckpt`` in the configuration's folder (one
folder, history and MLflow run per configuration); the last rung ends COMPLETE. ``n_trials`` counts configurations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna

from masklab import MasklabError
from masklab.sweep.schedulers import Scheduler
from masklab.sweep.storage import INTERRUPTED, NO_OWNER, WORKER_DIED, scheme, shared


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


def asha_root(t) -> int:
    """The configuration trial ``t`` trains: its first trial's number (a first trial has no ``asha_root``)."""
    return t.user_attrs.get("asha_root", t.number)


class Asha(Scheduler):
    """ASHA (:mod:`masklab.sweep.asha`): pause every configuration at each rung, resume the rung's leaders from the
    checkpoint folder they paused in (``checkpoint_dir``, which every worker must see, or the sweep folder)."""

    new_attrs = {"asha_rung": 0}  # what a new configuration's trial is created with

    def __init__(self, min_resource: int = 2, reduction_factor: int = 3):
        rungs(2, min_resource, reduction_factor)  # checks the values when the study opens
        self.settings = {"min_resource": int(min_resource), "reduction_factor": int(reduction_factor)}

    def start(self, epochs, sweep_dir, study_name, checkpoint_dir, dists=None, spec="") -> None:
        if "schedule.epochs" in (dists or {}):
            raise MasklabError("hydra.sweeper.pruner=asha pauses every trial at the same epochs: sweep "
                               "schedule.epochs with another pruner, or fix it")  # fmt: skip
        if not epochs:
            raise MasklabError("hydra.sweeper.pruner=asha needs schedule.epochs (the last rung): a number, or auto "
                               "once the data is prepared (python src/prepare.py data=<its option>)")  # fmt: skip
        if shared(spec) and not checkpoint_dir:
            raise MasklabError(
                f"hydra.sweeper.pruner=asha on {scheme(spec)} storage: any machine may resume a paused trial, so its "
                "checkpoint must be where every machine sees it: give hydra.sweeper.checkpoint_dir=<shared folder "
                "or fsspec URL>, or choose another pruner (e.g. hydra.sweeper.pruner=median)"
            )
        self.rungs = rungs(int(epochs), **self.settings)
        super().start(epochs, sweep_dir, study_name, checkpoint_dir)

    def promotion(self, trials, maximize: bool) -> tuple[dict, dict] | None:
        sign, configs, params = (1 if maximize else -1), {}, {}
        for t in sorted(trials, key=lambda t: t.number):
            if "asha_rung" not in t.user_attrs:
                continue
            root, rung = asha_root(t), t.user_attrs["asha_rung"]
            c = configs.setdefault(root, Config(root))
            params.setdefault(root, t.params)
            killed = t.user_attrs.get("fail_reason") in (WORKER_DIED, NO_OWNER, INTERRUPTED)
            # a killed or interrupted resume: the configuration still waits where it was
            if t.state == optuna.trial.TrialState.FAIL and killed and rung:
                continue
            c.values.update({step: sign * v for step, v in t.intermediate_values.items()})
            paused = t.state == optuna.trial.TrialState.PRUNED and t.user_attrs.get("asha_paused")
            c.paused_at = rung if paused else None  # its latest trial says whether it waits
        if (job := promotion(list(configs.values()), self.rungs, self.settings["reduction_factor"])) is None:
            return None
        root, k = job
        note = f"resumes trial {root}, epochs {self.rungs[k] + 1}-{self.rungs[k + 1]}"
        return params[root], {"asha_root": root, "asha_rung": k + 1, "note": note}

    def overrides(self, attrs: dict, number: int) -> list[str]:
        """A trial stops at its rung; a promoted one resumes its configuration's last checkpoint, in that
        configuration's folder (one history, one best checkpoint, one MLflow run per configuration)."""
        k, root = attrs["asha_rung"], attrs.get("asha_root", number)
        out = [f"sweep.stop_epoch={self.rungs[k]}", *super().overrides(attrs, root)]  # the configuration's folder
        if k:
            out += [f"hydra.sweep.subdir={root}", f"resume='{self.folder(root)}/last.ckpt'"]
        return out
