"""The Lightning callbacks of a training run, each a ``_target_`` in ``conf/callbacks/`` (``cfg.callbacks``).

Besides Lightning's hooks, a callback may have ``stopped`` (True when it ended training early: no test, no
gallery), ``after_test(trainer, module, metrics)`` (train.py calls it after the test, before the run's files and
summary) and ``finish(metrics)`` (called last; a sweep's trial raises ``TrialPruned`` there).
"""

from __future__ import annotations

import lightning.pytorch as L
from hydra.utils import instantiate
from omegaconf import DictConfig


def instantiate_callbacks(node: DictConfig | None) -> list[L.Callback]:
    """Every entry of ``callbacks`` with a ``_target_`` (``callbacks.<name>=null`` drops one)."""
    return [instantiate(c) for c in (node or {}).values() if c is not None and c.get("_target_")]


def stopped(callbacks) -> bool:
    """Whether a callback ended training early (a pruned or paused trial)."""
    return any(getattr(c, "stopped", False) for c in callbacks)


def after_test(callbacks, trainer: L.Trainer, module: L.LightningModule, metrics: dict) -> None:
    for c in callbacks:
        if hasattr(c, "after_test"):
            c.after_test(trainer, module, metrics)


def finish(callbacks, metrics: dict) -> None:
    for c in callbacks:
        if hasattr(c, "finish"):
            c.finish(metrics)
