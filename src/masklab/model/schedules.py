"""LR factor functions of the ``schedule`` group: ``f(epoch, epochs) -> factor`` (epoch is fractional).

The LightningModule multiplies the optimizer's LR by ``warmup(step) * f(step / steps_per_epoch)``
every optimizer step, so every schedule gets the same linear warmup and step-exact boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: the schedule's counts (0 epochs would train nothing and exit 0)
SIZES = {"schedule.epochs": 1, "schedule.steps": 1}


def constant(epoch: float, epochs: int) -> float:
    return 1.0


def _at(boundary: float, epochs: int, reference_epochs: int | None) -> float:
    """A boundary given in epochs of a ``reference_epochs``-epoch run, moved in proportion to a run of
    ``epochs`` (unchanged when ``reference_epochs`` is null or equal): a step schedule written for 12
    epochs keeps its shape in a 6-epoch run, so a sweep over schedules compares them at one budget."""
    return boundary if not reference_epochs or reference_epochs == epochs else boundary * epochs / reference_epochs


def multistep(
    epoch: float, epochs: int, milestones: Sequence[int] = (), gamma: float = 0.1, reference_epochs: int | None = None
) -> float:
    """x gamma at each milestone epoch (0-based: milestone 8 means from the 9th epoch on)."""
    return gamma ** sum(epoch >= _at(m, epochs, reference_epochs) for m in milestones)


def piecewise(
    epoch: float, epochs: int, pieces: Sequence[Sequence[float]] = ((0, 1.0),), reference_epochs: int | None = None
) -> float:
    """Factor of the last ``[start_epoch, factor]`` piece whose start is <= epoch (the seeds' tables)."""
    factor = 1.0
    for start, value in sorted(pieces, key=lambda p: p[0]):
        if epoch >= _at(start, epochs, reference_epochs):
            factor = value
    return float(factor)


def boundaries(
    epochs: int,
    milestones: Sequence[float] = (),
    pieces: Sequence[Sequence[float]] = (),
    reference_epochs: int | None = None,
    **_,
) -> list[float]:
    """The epochs (of this ``epochs``-epoch run) where a ``multistep`` or ``piecewise`` factor changes,
    from that schedule's keyword arguments (``**_``: the others, e.g. ``gamma``); [] for the others."""
    starts = [m for m in milestones] + [p[0] for p in pieces if p[0] > 0]
    return sorted(_at(b, epochs, reference_epochs) for b in starts)


def cosine(epoch: float, epochs: int, min_factor: float = 0.0) -> float:
    t = min(max(epoch / max(epochs, 1), 0.0), 1.0)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))


def warmup(step: int, warmup_iters: int, warmup_factor: float) -> float:
    """Linear warmup from ``warmup_factor`` to 1 over ``warmup_iters`` optimizer steps (torchvision refs)."""
    if step >= warmup_iters:
        return 1.0
    alpha = step / warmup_iters
    return warmup_factor * (1 - alpha) + alpha
