"""Hydra sweep grammar -> Optuna distributions, and a trial's params -> Hydra overrides.

``choice(a, b)`` -> categorical; ``range(1, 5)`` -> int steps (float when any bound is); ``interval(a, b)``
-> float (int when both bounds are ints); ``tag(log, interval(...))`` samples log-uniformly. A plain
``key=value`` is fixed for every trial. Later sources win: ``hparams_search`` < ``hydra.sweeper.params``
< the command line.
"""

from __future__ import annotations

import math

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from masklab import MasklabError, first_line


def to_distribution(override: Override) -> BaseDistribution | None:
    """The distribution of a sweep override, or None for a fixed ``key=value``."""
    if not override.is_sweep_override():
        return None
    value = override.value()
    log = "log" in getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution([c for c in override.sweep_iterator(transformer=lambda x: x)])
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if step <= 0 or stop <= start:
            raise MasklabError(
                f"{override.input_line}: range({start}, {stop}, {step}) holds no value "
                "(Python's range: start < stop, step > 0; stop is left out)"
            )
        last = start + step * math.ceil((stop - start) / step - 1)  # the last value range() yields
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(start, int(last), step=step, log=log and step == 1)
        return FloatDistribution(float(start), float(last), step=step)
    if isinstance(value, IntervalSweep):
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise MasklabError(
        f"{override.input_line}: unsupported sweep for Optuna (use choice, range, interval, tag(log, ...))"
    )


def parse(search_space: dict | None, params: dict | None, arguments: list[str]):
    """(distributions by key, fixed overrides) from the three sources, later ones winning."""
    lines = {}
    for source in (search_space or {}, params or {}):
        for key, expr in source.items():
            lines[str(key)] = f"{key}={expr}"
    for arg in arguments:
        lines[arg.split("=", 1)[0]] = arg
    parser = OverridesParser.create()
    dists, fixed = {}, []
    for line in lines.values():
        try:
            (override,) = parser.parse_overrides([line])
        except Exception as exc:  # hydra's OverrideParseException carries a multi-line message
            raise MasklabError(f"search space entry {line!r} does not parse: {first_line(exc)}") from None
        try:
            dist = to_distribution(override)
        except ValueError as exc:  # Optuna's: low > high, log with a bound <= 0, a step that does not fit
            raise MasklabError(f"search space entry {line!r}: {first_line(exc)}") from None
        if dist is None:
            fixed.append(line)
        else:
            dists[override.get_key_element()] = dist
    return dists, fixed


def to_overrides(params: dict) -> list[str]:
    """Hydra overrides of a trial's sampled params (floats with full precision)."""
    return [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]


def describe(d: BaseDistribution) -> str:
    """A distribution in the sweep grammar it came from: ``choice(a, b)``, ``tag(log, interval(a, b))``, ``range``."""
    if isinstance(d, CategoricalDistribution):
        return f"choice({', '.join(map(str, d.choices))})"
    if d.step not in (None, 1):  # Optuna's stepped distributions are never log
        return f"range({d.low:g}, {d.high + d.step:g}, {d.step:g})"
    return f"tag(log, interval({d.low}, {d.high}))" if d.log else f"interval({d.low}, {d.high})"
