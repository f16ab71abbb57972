"""A training run's picture of how its model does: the first val images, ground truth beside prediction.

The same images in every run of a dataset (the first ``n`` of the val split), so runs compare by eye in
MLflow (``predictions/val_000.png`` ...) as their numbers do in its tables.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from masklab.paths import load_checkpoint
from masklab.viz import draw

log = logging.getLogger("masklab.train")

#: small images (shapes: 128 px) are drawn at this longer side, so the labels stay readable; large ones (photos)
#: at most at MAX_SIDE, so a run's artifacts stay small
MIN_SIDE, MAX_SIDE = 384, 1024
HEADER = draw.TITLE_HEIGHT  # px of the title strip above each panel
#: predictions drawn need this score (detectron2's demo default); the run's detection min confidence (0.05, so
#: that AP sees the whole precision-recall curve) would cover an object with its weak duplicates
MIN_SCORE = 0.5


def _scaled(image: np.ndarray, instances: dict, s: float) -> tuple[np.ndarray, dict]:
    if s == 1:
        return image, instances
    h, w = image.shape[:2]
    size = (round(w * s), round(h * s))
    masks = draw.binary_masks(instances).astype(np.uint8)
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), {
        **instances,
        "boxes": instances["boxes"] * s,
        "masks": np.stack([cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) for m in masks])
        if len(masks)
        else np.zeros((0, size[1], size[0]), np.uint8),
    }


def _panel(image: np.ndarray, instances: dict, class_names, title: str, s: float) -> np.ndarray:
    return draw.with_title(draw.instances(*_scaled(image, instances, s), class_names), title, HEADER)


@torch.no_grad()
def val_gallery(model, dataset, class_names, n: int, out_dir: Path, device="cpu") -> list[Path]:
    """Draw the first ``n`` images of ``dataset`` (``(image tensor, target)`` items): ground truth on the left,
    ``model``'s predictions (its own detection settings) scoring at least :data:`MIN_SCORE` on the right (the title
    counts the weaker ones left out); one PNG each in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training, files = model.training, []
    model.eval()
    try:
        for i in range(min(n, len(dataset))):
            image, target = dataset[i]
            pred = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
            rgb = (image.permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)
            side = max(rgb.shape[:2])
            s = MIN_SIDE / side if side < MIN_SIDE else min(1.0, MAX_SIDE / side)
            gt = {"boxes": target["boxes"], "labels": target["labels"], "masks": target["masks"]}
            left = _panel(rgb, gt, class_names, f"ground truth: {len(gt['labels'])}", s)
            shown = draw.confident(pred, MIN_SCORE)
            weaker = len(pred["labels"]) - len(shown["labels"])
            title = f"prediction: {len(shown['labels'])} scoring >= {MIN_SCORE:g}" + (
                f" (+{weaker} weaker)" if weaker else ""
            )
            right = _panel(rgb, shown, class_names, title, s)
            gap = np.full((left.shape[0], 4, 3), 255, np.uint8)
            path = out_dir / f"val_{i:03d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([left, gap, right], axis=1), cv2.COLOR_RGB2BGR))
            files.append(path)
    finally:
        model.train(was_training)
    return files


def log_predictions(n: int, module, datamodule, best_ckpt: str, output_dir, logger) -> None:
    """The first ``n`` val images, ground truth beside the best checkpoint's prediction, drawn in
    fp32 on the CPU (torchvision's CPU NMS has no half kernels). A failure here warns: the run itself is done."""
    if not n:
        return
    try:
        module.load_state_dict(load_checkpoint(best_ckpt)["state_dict"])  # a file, or a shared checkpoint_dir's URL
        files = val_gallery(
            module.model.float().cpu(),
            datamodule.datasets["val"],
            module.class_names,
            n,
            Path(output_dir) / "predictions",
        )
    except Exception as exc:  # noqa: BLE001 - pictures of a finished run must not fail it (or its trial)
        log.warning("predictions of the first %d val images not drawn: %s: %s", n, type(exc).__name__, exc)
        return
    if logger:
        for f in files:
            logger.experiment.log_artifact(logger.run_id, str(f), "predictions")
