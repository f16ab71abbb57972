"""Console summaries printed at the end of a run."""

from __future__ import annotations

from pathlib import Path

from masklab.secrets import mask


def metrics_table(metrics: dict[str, float], title: str = "final metrics") -> str:
    """A plain two-column table, grouped by stage (val/..., test/...), names sorted."""
    rows = sorted((k, float(v)) for k, v in metrics.items())
    width = max([len(k) for k, _ in rows] + [len(title)])
    line = "-" * (width + 12)
    body = "\n".join(f"{k:<{width}}  {_value(k, v):>9}" for k, v in rows)
    return f"{line}\n{title:<{width}}  {'value':>9}\n{line}\n{body}\n{line}"


#: why COCO has nothing to score for a NaN metric, by its name's end
NOTHING_TO_SCORE = {"APs": "small", "APm": "medium", "APl": "large"}


def _value(name: str, v: float) -> str:
    """The value, or why there is none: COCO scores no APl when the split has no large objects (area > 96²)."""
    if v == v:
        return f"{v:.4f}"
    stage, _, metric = name.partition("/")
    size = NOTHING_TO_SCORE.get(metric.rsplit("_", 1)[-1])
    if size:
        return f"n/a (no {size} objects in {stage})"
    if "/loss" in name:
        return "n/a (not computed)"
    return "n/a (nothing to score)"


def run_summary(
    metrics: dict[str, float],
    optimized_metric: str,
    best: float,
    best_ckpt: str | None,
    run_id: str | None,
    experiment: str,
    tracking_uri: str,
) -> str:
    """What train.py prints at the end: the metrics table, the best checkpoint and the MLflow run."""
    lines = [
        metrics_table(metrics, title=f"final metrics ({optimized_metric} best = {best:.4f})"),
        f"best checkpoint: {best_ckpt or '(none)'}",
    ]
    if run_id:
        uri = mask(tracking_uri)
        compare = f"open {uri}" if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri}"
        lines += [f"MLflow run {run_id} in experiment '{experiment}' at {uri}", f"  compare runs: {compare}"]
    return "\n".join(lines)


def export_files(export, best_checkpoint: str | None, metrics: dict, best_value: float, history: Path) -> None:
    """Copies at fixed paths for pipelines: ``export.{checkpoint,metrics,history}`` (each optional)."""
    import json
    import math
    import shutil

    import fsspec

    for key, path in (("checkpoint", export.checkpoint), ("metrics", export.metrics), ("history", export.history)):
        if not path:
            continue
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if key == "checkpoint" and best_checkpoint:  # a file, or a shared checkpoint_dir's URL
            with fsspec.open(str(best_checkpoint), "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
        elif key == "metrics":
            flat = {k: (None if math.isnan(v) else v) for k, v in metrics.items()}
            Path(path).write_text(
                json.dumps({**flat, "best": None if math.isnan(best_value) else best_value}, indent=1)
            )
        elif key == "history" and history.is_file():
            shutil.copyfile(history, path)
