"""Run by test_distributed under ``unshare -n``: a sweep on a PostgreSQL of its own while this network namespace's
loopback is down for ``CUT_S`` (packets dropped, not refused: a network cut), from trial 0's first epoch report.
Prints, as JSON, when the worker ended counted from the cut (null: not before the network came back)."""

from __future__ import annotations

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


def main(tmp: Path) -> dict:
    link("up")
    pg = Postgres().start()
    try:
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
    finally:
        link("up")
        pg.stop()


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
