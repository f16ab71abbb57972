"""What evaluate.py writes: metrics.json, COCO results, plots, re-tuning tables, and the MLflow copy."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

from masklab.metrics import registry
from masklab.secrets import mask
from masklab.viz import plots

log = logging.getLogger("masklab.evaluate")


def write_outputs(out: Path, metrics: dict, ev, extra: dict, class_names, prefix: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({k: _json(v) for k, v in metrics.items()}, indent=1))
    results = [{k: a[k] for k in ("image_id", "category_id", "bbox", "score", "segmentation")} for a in ev.dt]
    (out / "coco_results.json").write_text(json.dumps(results))
    files = [out / "metrics.json", out / "coco_results.json"]
    files.append(
        plots.save(
            plots.pr_curves(ev.last_eval.get("segm"), class_names, f"{prefix}: segm precision-recall, IoU 0.5"),
            out / "pr_curves.png",
        )
    )
    files.append(
        plots.save(
            plots.confusion_matrix(
                extra["confusion"], class_names, f"{prefix}: IoU 0.5, score >= {extra['counted_score']:g}"
            ),
            out / "confusion_matrix.png",
        )
    )
    return files


def write_retune(out: Path, rows: list[dict], best: dict) -> list[Path]:
    keys = list(rows[0])
    with open(out / "retune.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    shown = ["score_thresh", "nms_thresh", "max_dets", *(k for k in registry.headline() if k in keys)]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in shown) + " |" for r in rows]
    lines += ["", "Best setting per metric:", ""]
    lines += [
        f"- {m}: {_cell(r[m])} at score_thresh={r['score_thresh']} nms_thresh={r['nms_thresh']} "
        f"max_dets={r['max_dets']}"
        for m, r in best.items()
    ]
    (out / "retune.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return [out / "retune.csv", out / "retune.md"]


def log_to_mlflow(tracking_uri: str, experiment: str, run_id: str | None, metrics: dict, files: list[Path]) -> None:
    """Into the run that trained the checkpoint when this store has it, else a new run; keys ``eval/<split>/...``."""
    import mlflow
    from mlflow import MlflowClient

    from masklab.track.mlflow_utils import experiment_id

    client = MlflowClient(tracking_uri)
    try:
        client.get_run(run_id) if run_id else None
    except mlflow.exceptions.MlflowException:
        log.info("the checkpoint's MLflow run %s is not in %s: logging to a new run", run_id, mask(tracking_uri))
        run_id = None
    if run_id is None:
        run_id = client.create_run(
            experiment_id(client, experiment), run_name="evaluate", tags={"masklab.role": "evaluate"}
        ).info.run_id
        client.set_terminated(run_id)
    for k, v in metrics.items():
        if math.isfinite(v):
            client.log_metric(run_id, f"eval/{k}", v)
    for f in files:
        client.log_artifact(run_id, str(f), "evaluate")
    print(f"logged to MLflow run {run_id} ({mask(tracking_uri)})")


def _json(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _cell(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
