"""A run's ``history.csv``: one row per epoch, a metric missing from an epoch an empty cell (NaN when read).

Kept apart from the Lightning callback that writes it, so that reading one (``report.py``) needs no Lightning.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path


def write_csv(rows: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(
            [
                {k: ("" if isinstance(r.get(k), float) and math.isnan(r[k]) else r.get(k, "")) for k in keys}
                for r in rows
            ]
        )


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {k: (float(v) if v not in ("", None) else float("nan")) for k, v in r.items()} for r in csv.DictReader(f)
        ]
