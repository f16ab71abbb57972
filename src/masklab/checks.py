"""Checks of config values before anything is built: one line naming the key and what it must be.

Each module that reads keys keeps their table next to the code that reads them (``model.build.NET_NUMBERS``,
``model.module.OPTIMIZER_NUMBERS``, ``data.datamodule.SIZES``, ``model.schedules.SIZES``); the CLIs check their own.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from masklab.errors import MasklabError


def in_range(low, high, integer=False, high_open=False):
    """A number check: ``low <= v <= high`` (``< high`` when ``high_open``; no upper bound for None)."""

    def ok(v):
        return (
            (not integer or isinstance(v, int))
            and v >= low
            and (high is None or (v < high if high_open else v <= high))
        )

    return ok


def check_numbers(cfg: DictConfig, numbers: dict) -> None:
    """One line naming the first of ``numbers`` (key: (check, what it must be)) that is not
    a number in its range."""
    for key, (ok, what) in numbers.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            raise MasklabError(f"{key}={value}: must be {what}")


def check_least(cfg: DictConfig, least: dict) -> None:
    """One line naming the first of ``least`` (key: lowest integer) that is not an integer that large (``auto`` is
    left to the data's own error)."""
    for key, low in least.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value == "auto":
            continue
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise MasklabError(f"{key}={value}: must be an integer >= {low}")
