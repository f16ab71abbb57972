"""Console summaries printed at the end of a run."""
from __future__ import annotations


def metrics_table(metrics: dict[str, float], title: str = "final metrics") -> str:
    """A plain two-column table, grouped by stage (val/..., test/...), names sorted."""
    rows = sorted((k, float(v)) for k, v in metrics.items())
    width = max([len(k) for k, _ in rows] + [len(title)])
    line = "-" * (width + 12)
    body = "\n".join(f"{k:<{width}}  {v:>9.4f}" for k, v in rows)
    return f"{line}\n{title:<{width}}  {'value':>9}\n{line}\n{body}\n{line}"


def run_summary(metrics: dict[str, float], optimized_metric: str, best: float, best_ckpt: str | None,
                run_id: str | None, experiment: str, tracking_uri: str) -> str:
    """What train.py prints at the end: the metrics table, the best checkpoint and the MLflow run."""
    lines = [metrics_table(metrics, title=f"final metrics ({optimized_metric} best = {best:.4f})"),
             f"best checkpoint: {best_ckpt or '(none)'}"]
    if run_id:
        lines += [f"MLflow run {run_id} in experiment '{experiment}' at {tracking_uri}",
                  f"  compare runs: mlflow ui --backend-store-uri {tracking_uri}"]
    return "\n".join(lines)
