"""Run by test_distributed under ``unshare -n``: a PostgreSQL of its own, and this network namespace's loopback down
(packets dropped, not refused: a network cut). ``sweep``: a sweep, cut for ``CUT_S`` from trial 0's first epoch
report; prints, as JSON, when the worker ended counted from the cut (null: not before the network came back).
``lock``: a worker holds the storage's lock and is cut off for good; prints whether another can take it after.
``row``: the same for a trial's row, locked by Optuna's connection mid-call (as it tells the trial)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parents[2] / "src")]
from conftest import ROOT, TINY  # noqa: E402
from helpers.services import Postgres  # noqa: E402

CUT_S = 60.0


def link(state: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", state], check=True)


def states(url: str) -> list:
    import optuna

    try:
        study = optuna.load_study(study_name="cut", storage=optuna.storages.RDBStorage(url, skip_table_creation=True))
        return study.get_trials(deepcopy=False)
    except Exception:  # no tables or study yet
        return []


def main(tmp: Path, scenario: str) -> dict:
    link("up")
    pg = Postgres().start()
    try:
        return {"sweep": sweep, "lock": lock, "row": row}[scenario](pg, tmp)
    finally:
        link("up")
        pg.stop()


def lock(pg: Postgres, tmp: Path) -> dict:
    import threading

    from masklab.sweep import storage

    url, held, gone = pg.database("cut"), threading.Event(), threading.Event()

    def holder() -> None:  # its connection dies with the network; its process lives on, as a machine cut off does
        with contextlib.suppress(Exception), storage.lock(url, tmp, silence_s=1.0):
            held.set()
            gone.wait(60)

    threading.Thread(target=holder, daemon=True).start()
    held.wait(30)
    link("down")
    time.sleep(8)
    link("up")
    taken = pg.sql(f"SELECT pg_try_advisory_lock({storage._LOCK_KEY})", db="cut").strip() == "t"
    gone.set()
    return {"held": held.is_set(), "taken_by_another": taken}


def row(pg: Postgres, tmp: Path) -> dict:
    import threading

    from sqlalchemy import text

    from masklab.sweep.storage import Store, _process_storage

    url, held, gone = pg.database("cut"), threading.Event(), threading.Event()
    store = Store(url, tmp, 60, heartbeat_s=1.0, study_name="cut", direction="maximize")
    trial_id = store.ask()

    def holder() -> None:  # Optuna's own connection, cut off between two statements of one transaction
        with contextlib.suppress(Exception), _process_storage(url, None).engine.connect() as conn:
            conn.execute(text("SELECT trial_id FROM trials WHERE trial_id = :t FOR UPDATE"), {"t": trial_id})
            held.set()
            gone.wait(60)

    threading.Thread(target=holder, daemon=True).start()
    held.wait(30)
    link("down")
    time.sleep(8)
    link("up")
    try:  # as another worker failing that trial as dead would: blocked for as long as the row stays locked
        pg.sql(f"SET lock_timeout = '5s'; UPDATE trials SET state = 'FAIL' WHERE trial_id = {trial_id}", db="cut")
        updated = True
    except subprocess.CalledProcessError:
        updated = False
    gone.set()
    return {"held": held.is_set(), "updated_by_another": updated}


def sweep(pg: Postgres, tmp: Path) -> dict:
    url, log = pg.database("cut"), tmp / "cut.log"
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), "-m", "hydra/sweeper=optuna", *TINY, "schedule.epochs=6",
           "hparams_search=none", "optimizer.lr=tag(log,interval(0.001,0.05))", "hydra.sweeper.pruner=median",
           "hydra.sweeper.heartbeat_s=1", "hydra.sweeper.stale_after_s=3", "hydra.sweeper.n_trials=2",
           "experiment_name=cut", f"hydra.sweeper.storage='{url}'", f"paths.root_dir={tmp}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    while not any(t.intermediate_values for t in states(url)) and proc.poll() is None:
        time.sleep(0.2)
    link("down")
    cut = time.monotonic()
    while proc.poll() is None and time.monotonic() - cut < CUT_S:
        time.sleep(0.2)
    ended_s = time.monotonic() - cut if proc.poll() is not None else None
    link("up")
    rc = proc.wait(timeout=600)
    return {"rc": rc, "ended_s": ended_s, "states": [t.state.name for t in states(url)], "log": log.read_text()}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2])))
