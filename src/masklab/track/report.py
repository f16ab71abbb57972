"""Compare the runs of an MLflow experiment: their loss curves on one figure, a sorted table, and their
predictions of the same val image side by side."""

from __future__ import annotations

import csv
import logging
import math
import os
import tempfile
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
from mlflow import MlflowClient

from masklab import MasklabError
from masklab.track.history import read_csv
from masklab.viz import draw, plots

log = logging.getLogger("masklab.report")


def runs_of(client: MlflowClient, experiment: str, include_children: bool = True):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise MasklabError(f"no MLflow experiment {experiment!r} at {client.tracking_uri} (there are: {names})")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    return [
        r
        for r in runs
        if r.data.tags.get("masklab.role") not in ("study", "evaluate")
        and (include_children or "mlflow.parentRunId" not in r.data.tags)
    ]


def download(client: MlflowClient, run_id: str, name: str, dst: str) -> str:
    """``client.download_artifacts`` without MLflow's progress bar: one bar per small file, dozens of them after a
    study's summary table or a report."""
    with mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
        return client.download_artifacts(run_id, name, dst)


def history_of(client: MlflowClient, run) -> list[dict]:
    """The run's per-epoch history.csv artifact, else its val/* metric histories (one point per epoch)."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return read_csv(Path(download(client, run.info.run_id, "plots/history.csv", tmp)))
    except Exception:  # noqa: BLE001 - older runs or runs killed before the first epoch end have no artifact
        rows: dict[int, dict] = {}
        for key in (k for k in run.data.metrics if k.startswith("val/loss")):
            for i, m in enumerate(sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)):
                rows.setdefault(i, {"epoch": i})[key] = m.value
        return [rows[i] for i in sorted(rows)]


def table(runs, params, metrics, metric: str, mode: str) -> list[dict]:
    """One row per run (params, final metrics, and the ``metric`` it is sorted by, best first)."""
    if mode not in ("min", "max"):
        raise MasklabError(f"mode={mode}: choose max or min (how {metric} improves)")
    if not any(metric in r.data.metrics for r in runs):
        known = sorted({k for r in runs for k in r.data.metrics if not k.startswith("train/")})
        raise MasklabError(f"metric={metric}: no run of this experiment logged it; logged: {known}")
    metrics = [*metrics, *([metric] if metric not in metrics else [])]
    data = {r.data.tags.get("data_digest", "?") for r in runs}
    if len(data) > 1:  # a dataset prepared again, or several datasets under one experiment name
        log.warning("the runs trained on %d different data (column data: their tag data_digest; ? = generated data "
                    "or a run from before the tag): compare runs of the same data", len(data))  # fmt: skip
    rows = [
        {
            "run": r.info.run_name,
            "status": r.data.tags.get("trial_state", r.info.status),
            "run_id": r.info.run_id,
            **({"data": r.data.tags.get("data_digest", "?")} if len(data) > 1 else {}),
            **{p: r.data.params.get(p, "") for p in params},
            **{m: r.data.metrics.get(m, math.nan) for m in metrics},
        }
        for r in runs
    ]

    def key(r):  # best first; runs without the metric last
        v = r.get(metric, math.nan)
        return (1, 0.0) if math.isnan(v) else (0, -v if mode == "max" else v)

    return sorted(rows, key=key)


def write(out: Path, rows: list[dict], histories: dict[str, list[dict]], metric: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0]) if rows else ["run"]
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    shown = [k for k in keys if k != "run_id"]
    lines = [f"Runs sorted by {metric}", "", "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += [
        "| " + " | ".join(f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in shown) + " |" for r in rows
    ]
    (out / "runs.md").write_text("\n".join(lines) + "\n")
    files = [out / "runs.csv", out / "runs.md"]
    for stage in ("val", "train"):
        files.append(plots.save(plots.compare_losses(histories, stage), out / f"losses_{stage}.png"))
    print("\n".join(lines))
    return files


HEADER = draw.TITLE_HEIGHT  # px of the run's title strip, and of the one each gallery panel has


def gallery_of(client: MlflowClient, run_id: str, name: str = "predictions/val_000.png") -> np.ndarray | None:
    """The run's drawing of its first val image (RGB: ground truth | prediction), None when it has none."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bgr = cv2.imread(download(client, run_id, name, tmp))
    except Exception:  # noqa: BLE001 - runs from before log_predictions, or with log_predictions=0
        return None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def prediction_sheet(
    rows: list[dict], galleries: dict[str, np.ndarray], metric: str, columns: int = 4
) -> np.ndarray | None:
    """The ground truth once, then each run's prediction of that image, in the order of ``rows`` (best first)."""
    shown = [r for r in rows if galleries.get(r["run_id"]) is not None]
    if not shown:
        return None
    first = galleries[shown[0]["run_id"]][HEADER:]  # a gallery's own titles ("ground truth", "prediction") are replaced
    h, w = first.shape[0], (first.shape[1] - 4) // 2  # a gallery is [ground truth | 4 px | prediction]
    cells = [_titled(first[:, :w], "ground truth")]
    for r in shown:
        g = galleries[r["run_id"]][HEADER:]
        pred = g[:, g.shape[1] - (g.shape[1] - 4) // 2 :]
        pred = pred if pred.shape[:2] == (h, w) else cv2.resize(pred, (w, h), interpolation=cv2.INTER_AREA)
        value = r.get(metric, math.nan)
        cells.append(_titled(pred, f"{r['run']}  {metric} {value:.4f}" if isinstance(value, float) else str(r["run"])))
    columns = min(columns, len(cells))  # one run: two cells side by side, not half a sheet of blanks
    cells += [np.full_like(cells[0], 255)] * (-len(cells) % columns)
    rows_ = [np.concatenate(cells[i : i + columns], axis=1) for i in range(0, len(cells), columns)]
    return np.concatenate(rows_, axis=0)


def _titled(image: np.ndarray, title: str) -> np.ndarray:
    """A cell of the sheet: ``image`` under its title, and a 4 px white gap on its right."""
    return np.pad(draw.with_title(image, title[:80], HEADER, scale=0.4), ((0, 0), (0, 4), (0, 0)), constant_values=255)


def write_prediction_sheet(client: MlflowClient, rows: list[dict], metric: str, path: Path) -> Path | None:
    """:func:`prediction_sheet` of ``rows`` (each with its ``run_id``) from their runs' drawings, written to ``path``;
    None when no run has a drawing."""
    sheet = prediction_sheet(rows, {r["run_id"]: gallery_of(client, r["run_id"]) for r in rows}, metric)
    if sheet is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path
