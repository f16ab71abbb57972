"""The one target contract every reader ends in (see DESIGN.md).

``boxes`` float32 N×4 xyxy px · ``labels`` int64 N (≥1, 0 is background) · ``masks`` uint8 N×H×W ·
``image_id`` int · ``area`` float32 N (mask pixels) · ``iscrowd`` int64 N.
"""

from __future__ import annotations

import numpy as np
import torch


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes (x2/y2 exclusive, i.e. last pixel + 1) of N×H×W binary masks; N×4 float32."""
    n = masks.shape[0]
    boxes = np.zeros((n, 4), dtype=np.float32)
    for i in range(n):
        ys = np.flatnonzero(masks[i].any(axis=1))
        xs = np.flatnonzero(masks[i].any(axis=0))
        if len(xs):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


def make_target(masks, labels, image_id: int, iscrowd=None, boxes=None) -> dict:
    """Build the contract target from N×H×W masks and N labels; boxes default to the masks' tight boxes.

    Instances whose mask is empty are dropped together with their label (and box).
    """
    masks = np.asarray(masks, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if masks.ndim != 3 or masks.shape[0] != labels.shape[0]:
        raise ValueError(f"masks {masks.shape} and labels {labels.shape} disagree")
    iscrowd = np.zeros(len(labels), np.int64) if iscrowd is None else np.asarray(iscrowd, np.int64)
    area = masks.reshape(len(labels), -1).sum(axis=1).astype(np.float32) if len(labels) else np.zeros(0, np.float32)
    keep = area > 0
    boxes = masks_to_boxes(masks) if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)
    return {
        "boxes": torch.from_numpy(boxes[keep]).reshape(-1, 4),
        "labels": torch.from_numpy(labels[keep]),
        "masks": torch.from_numpy(np.ascontiguousarray(masks[keep])),
        "image_id": int(image_id),
        "area": torch.from_numpy(area[keep]),
        "iscrowd": torch.from_numpy(iscrowd[keep]),
    }


def validate_target(target: dict, image_hw: tuple[int, int] | None = None) -> None:
    """Raise ``ValueError`` naming the first field that breaks the contract."""
    boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
    n = labels.shape[0]
    checks = [
        (
            boxes.dtype == torch.float32 and boxes.shape == (n, 4),
            f"boxes must be float32 {n}x4, got {boxes.dtype} {tuple(boxes.shape)}",
        ),
        (
            labels.dtype == torch.int64 and labels.ndim == 1,
            f"labels must be int64 N, got {labels.dtype} {tuple(labels.shape)}",
        ),
        (bool((labels >= 1).all()), "labels must be >= 1 (0 is background)"),
        (
            masks.dtype == torch.uint8 and masks.ndim == 3 and masks.shape[0] == n,
            f"masks must be uint8 {n}xHxW, got {masks.dtype} {tuple(masks.shape)}",
        ),
        (isinstance(target["image_id"], int), "image_id must be an int"),
        (target["area"].dtype == torch.float32 and target["area"].shape == (n,), "area must be float32 N"),
        (target["iscrowd"].dtype == torch.int64 and target["iscrowd"].shape == (n,), "iscrowd must be int64 N"),
        (
            bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()),
            "boxes must have x2 > x1 and y2 > y1",
        ),
        (bool((masks.flatten(1).sum(1) > 0).all()) if n else True, "masks must not be empty"),
    ]
    if image_hw is not None and n:
        checks.append(
            (tuple(masks.shape[1:]) == tuple(image_hw), f"masks {tuple(masks.shape[1:])} != image {tuple(image_hw)}")
        )
    for ok, message in checks:
        if not ok:
            raise ValueError(f"target {target.get('image_id')}: {message}")
