"""Matplotlib figures written as PNG (Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

LOSSES = ("loss", "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


def save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pr_curves(coco_eval, class_names, title: str):
    """Precision vs recall per class at IoU 0.5 (COCOeval's 101-point interpolated curves)."""
    fig, ax = plt.subplots(figsize=(6.5, 5))
    recall = np.linspace(0, 1, 101)
    prec = coco_eval.eval["precision"][0, :, :, 0, -1] if coco_eval is not None else None  # IoU .5, all areas, 100 dets
    for k, name in enumerate(class_names):
        p = prec[:, k] if prec is not None else np.full(101, -1.0)
        if (p > -1).any():
            ap = float(p[p > -1].mean())
            ax.plot(recall, np.where(p > -1, p, np.nan), label=f"{name} (AP50 {ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="lower left", fontsize=8)
    return fig


def confusion_matrix(matrix: np.ndarray, class_names, title: str):
    names = ["background", *class_names]
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(names), 1 + 0.6 * len(names)))
    ax.imshow(matrix, cmap="Blues")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                color="white" if matrix[i, j] > matrix.max() / 2 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def loss_curves(history: list[dict], title: str = ""):
    """Train vs val per epoch for the total loss and each of torchvision's five losses (the seeds' Figs. 9-12)."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    for ax, name in zip(axes.flat, LOSSES):
        for stage, style in (("train", "-"), ("val", "--")):
            pts = [(h["epoch"], h[f"{stage}/{name}"]) for h in history if _finite(h.get(f"{stage}/{name}"))]
            if pts:
                ax.plot(*zip(*pts), style, marker="o", ms=3, label=stage)
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def ap_curves(history: list[dict], title: str = ""):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in ("val/segm_AP", "val/segm_AP50", "val/bbox_AP", "val/bbox_AP50"):
        pts = [(h["epoch"], h[key]) for h in history if _finite(h.get(key))]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=key)
    ax.set(xlabel="epoch", ylabel="AP", ylim=(0, 1), title=title or "validation AP per epoch")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return fig


def compare_losses(runs: dict[str, list[dict]], stage: str = "val"):
    """Total and per-component loss vs epoch for every run on one figure."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), sharex=True)
    for ax, name in zip(axes.flat, LOSSES):
        for run, history in runs.items():
            pts = [(h["epoch"], h[f"{stage}/{name}"]) for h in history if _finite(h.get(f"{stage}/{name}"))]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=2, label=run)
        ax.set(title=f"{stage}/{name}", xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.tight_layout()
    if handles:  # under the x labels of the bottom row, in the room made for it
        rows = math.ceil(len(labels) / 4)
        fig.subplots_adjust(bottom=0.1 + 0.035 * rows)
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    return fig


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))
