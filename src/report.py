#!/usr/bin/env python
"""Compare the runs of an MLflow experiment (``python src/report.py --help``).

MLflow runs of the experiment -> a table of key params and final metrics sorted by the optimized
metric (Markdown + CSV), every run's total and per-component loss vs epoch on one figure (PNG), and the
best runs' predictions of the same val image side by side (``predictions.png``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, installed or not

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from masklab import MasklabError, exit_on_error  # noqa: E402
from masklab.track import report  # noqa: E402
from masklab.track.mlflow_utils import open_client  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    with exit_on_error():
        if isinstance(cfg.predictions, bool) or not isinstance(cfg.predictions, int) or cfg.predictions < 0:
            raise MasklabError(f"predictions={cfg.predictions}: the number of runs to draw, an integer >= 0")
        client = open_client(cfg.paths.tracking_uri, "")
        runs = report.runs_of(client, cfg.experiment, cfg.include_children)
        if not runs:
            raise MasklabError(f"experiment {cfg.experiment!r} has no training runs yet")
        rows = report.table(runs, list(cfg.params), list(cfg.metrics), cfg.metric, cfg.mode)
        histories = {r.info.run_name: report.history_of(client, r) for r in runs}
        report.write(out, rows, histories, cfg.metric)
        report.write_prediction_sheet(client, rows[: cfg.predictions], cfg.metric, out / "predictions.png")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
