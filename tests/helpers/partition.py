"""Run by test_distributed under ``unshare -n``: a PostgreSQL of its own, and this network namespace's loopback down
(packets dropped, not refused: a network cut). ``sweep``: a sweep, cut for ``CUT_S`` from trial 0's first epoch
report; prints, as JSON, when the worker ended counted from the cut (null: not before the network came back).
``lock``: a worker holds the storage's lock and a trial's row (Optuna's connection, mid-write) and is cut off for
good; prints whether another can take them after."""

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
        return {"sweep": sweep, "lock": lock}[scenario](pg, tmp)
    finally:
        link("up")
        pg.stop()


@contextlib.contextmanager
def cut_off_holding(hold):
    """``hold()`` (a context manager) entered in a thread whose connection dies with the network, cut for 8 s, as a
    machine cut off (its process lives on); yields whether it held, and lets go after the block."""
    import threading

    held, gone = threading.Event(), threading.Event()

    def holder() -> None:
        with contextlib.suppress(Exception), hold():
            held.set()
            gone.wait(60)

    threading.Thread(target=holder, daemon=True).start()
    held.wait(30)
    link("down")
    time.sleep(8)
    link("up")
    try:
        yield held.is_set()
    finally:
        gone.set()


def lock(pg: Postgres, tmp: Path) -> dict:
    from sqlalchemy import text

    from masklab.sweep.storage import _LOCK_KEY, Store, _process_storage, lock

    url = pg.database("cut")
    trial_id = Store(url, tmp, 60, heartbeat_s=1.0, study_name="cut", direction="maximize").ask()

    @contextlib.contextmanager
    def both():  # the storage's lock, and a trial's row as Optuna's own connection locks it while it writes it
        with lock(url, tmp, silence_s=1.0), _process_storage(url, None).engine.connect() as conn:
            conn.execute(text("SELECT trial_id FROM trials WHERE trial_id = :t FOR UPDATE"), {"t": trial_id})
            yield

    with cut_off_holding(both) as held:
        taken = pg.sql(f"SELECT pg_try_advisory_lock({_LOCK_KEY})", db="cut").strip() == "t"
        try:  # as another worker failing that trial as dead would: blocked for as long as the row stays locked
            pg.sql(f"SET lock_timeout = '5s'; UPDATE trials SET state = 'FAIL' WHERE trial_id = {trial_id}", db="cut")
            updated = True
        except subprocess.CalledProcessError:
            updated = False
    return {"held": held, "lock_taken_by_another": taken, "row_updated_by_another": updated}


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
