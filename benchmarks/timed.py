"""One training command of a benchmark, timed: its exported metrics and its wall minutes, or exit with its output."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def run_exported(label: str, cmd: list[str], metrics: Path) -> tuple[float, dict]:
    """Run ``cmd`` (which writes ``export.metrics=<metrics>``); (minutes, the metrics it exported)."""
    print("+", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    minutes = (time.perf_counter() - start) / 60
    if proc.returncode != 0:
        sys.exit(f"{label} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return minutes, json.loads(Path(metrics).read_text())
