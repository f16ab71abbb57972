"""Console summaries printed at the end of a run."""
from __future__ import annotations


def metrics_table(metrics: dict[str, float], title: str = "final metrics") -> str:
    """A plain two-column table, grouped by stage (val/..., test/...), names sorted."""
    rows = sorted((k, float(v)) for k, v in metrics.items())
    width = max([len(k) for k, _ in rows] + [len(title)])
    line = "-" * (width + 12)
    body = "\n".join(f"{k:<{width}}  {v:>9.4f}" for k, v in rows)
    return f"{line}\n{title:<{width}}  {'value':>9}\n{line}\n{body}\n{line}"
