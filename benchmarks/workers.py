#!/usr/bin/env python
"""Sweep workers on one study: what the shared storage costs them, PostgreSQL vs Optuna's journal file.

Each worker is a process running the sweeper's own ask (count and ask under the storage's lock, failing dead
trials), its heartbeat thread and its tell, around a "tiny trial" that sleeps ``--trial-s`` seconds instead of
training (the storage's cost does not depend on what a trial does). Printed side by side, for 1, 2 and 8 workers:
wall time, trials per minute, and the share of each worker's wall time spent in storage calls on its trials' path
(ask with the lock's wait, tell; not the polls of a worker idle at the end while others finish, nor the heartbeat
thread, which runs beside it), median ask. Python's garbage collections during those calls are left out and shown
apart (``Clock``). Target: that share < 2 %. The workers' loops start together, after each
has opened the study and imported its sampler (start-up, not storage), so their first asks collide on the lock:
the worst case of trials that all take the same time.

    python benchmarks/workers.py                          # journal, a throwaway PostgreSQL (if installed) and
                                                          # the same behind Optuna's gRPC proxy (grpc)
    python benchmarks/workers.py --workers 1 2 --trials 8 --trial-s 1 --storage journal
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))


def worker(spec: str, folder: str, n_trials: int, trial_s: float, heartbeat_s: float, out, ready, proxy=None) -> None:
    import optuna

    from masklab.sweep.schedulers import Scheduler
    from masklab.sweep.storage import Store
    from masklab.sweep.sweeper import OptunaSweeperBase, Session

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = Store(spec, Path(folder), 120, heartbeat_s, proxy=proxy, study_name="bench", direction="maximize")
    dists = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    session = Session(store, Scheduler(), None, dists, [], [], ["v"], n_trials, spec)
    sweeper = object.__new__(OptunaSweeperBase)
    sweeper.duplicates, sweeper.study_name = "train", "bench"
    optuna.create_study(sampler=type(store.study.sampler)()).ask(dists)  # the sampler's imports: start-up, not storage
    ready.wait()  # every worker's loop starts together (8 start-ups on 2 cores overlap the first asks otherwise)
    asks, tells, gcs, clock, done, start = [], [], [], Clock(), 0, time.time()
    with store.heartbeat():
        while True:
            trial = clock.time(lambda: sweeper._ask(session))
            if isinstance(trial, str):  # the budget is taken, others' trials still run: idle, not the trial path
                time.sleep(0.2)
                continue
            asks.append(clock.last)
            gcs.append(clock.paused)
            if trial is None:
                break
            time.sleep(trial_s)  # the trial
            clock.time(lambda: store.tell(trial, trial.params["x"]))  # noqa: B023  (called at once)
            tells.append(clock.last)
            gcs.append(clock.paused)
            done += 1
    out.put({"start": start, "end": time.time(), "asks": asks, "tells": tells, "done": done, "gc": sum(gcs)})


class Clock:
    """Times a call (``last``) less Python's garbage collections during it (``paused``): a full collection
    scans every object of a process that imported torch and Lightning (~500 k, ~0.3 s) and lands in whichever call
    allocates at that moment, so a storage call would be charged with the import-time heap."""

    def __init__(self):
        self.gc_s = self.paused = self.last = self._since = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._since = time.perf_counter()
        else:
            self.gc_s += time.perf_counter() - self._since

    def time(self, call):
        gc_before, t0 = self.gc_s, time.perf_counter()
        result = call()
        self.paused = self.gc_s - gc_before
        self.last = time.perf_counter() - t0 - self.paused
        return result


def run(spec: str, folder: Path, workers: int, n_trials: int, trial_s: float, heartbeat_s: float, proxy=None) -> dict:
    ctx = mp.get_context("spawn")
    out, ready = ctx.Queue(), ctx.Barrier(workers)
    args = (spec, str(folder), n_trials, trial_s, heartbeat_s, out, ready, proxy)
    procs = [ctx.Process(target=worker, args=args, daemon=True) for _ in range(workers)]  # daemons: end with this one
    for p in procs:
        p.start()
    results = collect(procs, out)
    for p in procs:
        p.join()
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)  # the loops, not process start-up
    storage = [sum(r["asks"]) + sum(r["tells"]) for r in results]
    return {
        "trials": sum(r["done"] for r in results),
        "wall": wall,
        "per_min": sum(r["done"] for r in results) / wall * 60,
        "share": max(s / (r["end"] - r["start"]) for s, r in zip(storage, results)),
        "mean_share": statistics.mean(s / (r["end"] - r["start"]) for s, r in zip(storage, results)),
        "ask_ms": statistics.median([a for r in results for a in r["asks"]]) * 1000,
        "ms_per_trial": sum(storage) / max(1, sum(r["done"] for r in results)) * 1000,
        "gc_ms_per_trial": sum(r["gc"] for r in results) / max(1, sum(r["done"] for r in results)) * 1000,
    }


def collect(procs: list, out) -> list[dict]:
    """Every worker's result; one line as soon as a worker has died without one (its traceback is above)."""
    results = []
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=1.0))
        except queue.Empty:
            if died := [p.exitcode for p in procs if p.exitcode not in (None, 0)]:
                raise SystemExit(f"error: {len(died)} of {len(procs)} workers died (exit {died}) first") from None
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 8])
    ap.add_argument("--trials", type=int, default=16, help="n_trials of each study")
    ap.add_argument("--trial-s", type=float, default=5.0, help="seconds one tiny trial takes")
    ap.add_argument("--heartbeat-s", type=float, default=10.0, help="hydra.sweeper.heartbeat_s (its default)")
    kinds = ["journal", "postgresql", "grpc"]
    ap.add_argument("--storage", nargs="+", default=kinds, choices=kinds, help="grpc: PostgreSQL behind Optuna's proxy")
    args = ap.parse_args()
    from helpers.services import Postgres, StorageProxy, pg_bin

    databases = {"postgresql", "grpc"} & set(args.storage)
    pg = Postgres().start() if databases and pg_bin() else None
    if databases and pg is None:
        print("PostgreSQL is not installed (apt-get install postgresql): journal only")
    print(f"{args.trials} tiny trials of {args.trial_s} s per study, heartbeat every {args.heartbeat_s} s; "
          "storage %: of a worker's wall, mean and max over workers; ms/trial: storage calls per trial; gc ms: "
          "Python's garbage collections during them, per trial, left out of both")  # fmt: skip
    print(f"{'storage':<11} {'workers':>7} {'trials':>6} {'wall s':>7} {'trials/min':>10} {'storage %':>9} "
          f"{'max':>6} {'ms/trial':>8} {'ask ms':>7} {'gc ms':>6}")  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for kind in [k for k in args.storage if k == "journal" or pg]:
                for n in args.workers:
                    folder = Path(tmp) / f"{kind}{n}"
                    folder.mkdir()
                    spec = f"journal:{folder}/optuna.journal" if kind == "journal" else pg.database(f"{kind}{n}")
                    proxy = StorageProxy(spec, folder).wait() if kind == "grpc" else None
                    try:
                        r = run(spec, folder, n, args.trials, args.trial_s, args.heartbeat_s, proxy and proxy.address)
                    finally:
                        if proxy:
                            proxy.stop()
                    print(f"{kind:<11} {n:>7} {r['trials']:>6} {r['wall']:>7.1f} {r['per_min']:>10.1f} "
                          f"{100 * r['mean_share']:>8.2f}% {100 * r['share']:>5.2f}% {r['ms_per_trial']:>8.0f} "
                          f"{r['ask_ms']:>7.1f} {r['gc_ms_per_trial']:>6.0f}")  # fmt: skip
    finally:
        if pg:
            pg.stop()


if __name__ == "__main__":
    main()
