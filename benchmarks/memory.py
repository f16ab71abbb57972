#!/usr/bin/env python
"""Peak memory of the default training run: ``python src/train.py`` (the main job) in a subprocess.

The target figure is the training process's peak resident set size: the kernel's own high-water
mark (``VmHWM`` in /proc/<pid>/status, read every ``--interval`` s; it only grows, so no peak is
missed between reads). Every ``--pss-interval`` s it also sums the proportional set size (PSS) over
the process tree: data-loader workers are forks that share most pages with the trainer, so summing
their RSS would count those pages several times; PSS splits each shared page among the processes
that map it. PSS is read from smaps, which costs CPU, hence the sparser sampling (read every 0.2 s it
stretched the 2-core main job from 9.3 to 11.9 min). MLflow goes to a
temporary store so the project's mlflow.db is untouched.

    python benchmarks/memory.py                         # the main job as the README runs it (~8 min on 2 cores)
    python benchmarks/memory.py schedule.epochs=1       # any override
Target: peak RSS <= 4 GiB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3


def _pss(p: psutil.Process) -> int:
    try:
        return p.memory_full_info().pss  # Linux; elsewhere fall back to RSS
    except (AttributeError, psutil.AccessDenied):
        return p.memory_info().rss


def _hwm(p: psutil.Process) -> int:
    """Peak RSS so far (VmHWM, bytes); the current RSS where /proc has no high-water mark."""
    try:
        for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return p.memory_info().rss


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interval", type=float, default=0.5, help="seconds between peak-RSS reads")
    p.add_argument("--pss-interval", type=float, default=5.0, help="seconds between PSS sums (smaps is costly)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the main job (none: exactly the default)")
    args = p.parse_intermixed_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        cmd = [sys.executable, str(ROOT / "src" / "train.py"), f"paths.output_root={tmp}/outputs", *args.overrides]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        main_peak = tree_peak = 0
        ps, next_pss = psutil.Process(proc.pid), 0.0
        while proc.poll() is None:
            try:
                main_peak = max(main_peak, _hwm(ps))
                if time.perf_counter() >= next_pss:
                    tree_peak = max(tree_peak, sum(_pss(p) for p in [ps, *ps.children(recursive=True)]))
                    next_pss = time.perf_counter() + args.pss_interval
            except psutil.NoSuchProcess:
                break
            time.sleep(args.interval)
        err = proc.stderr.read()
    if proc.returncode != 0:
        sys.exit(f"train.py failed:\n{err[-3000:]}")
    result = {
        "main_peak_gib": main_peak / GIB,
        "tree_peak_gib": tree_peak / GIB,
        "minutes": (time.perf_counter() - start) / 60,
    }
    print(
        f"python src/train.py {' '.join(args.overrides)}  ({result['minutes']:.1f} min, this machine)\n"
        f"  peak RSS, training process        {result['main_peak_gib']:.2f} GiB   (target <= 4 GiB)\n"
        f"  peak PSS, with loader workers     {result['tree_peak_gib']:.2f} GiB"
    )
    return result


if __name__ == "__main__":
    main()
