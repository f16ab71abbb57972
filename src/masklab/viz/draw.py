"""Instances drawn on an image, and the colour splash (seeds 002/003): H×W×3 uint8 RGB in and out."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np


def palette(n: int) -> list[tuple[int, int, int]]:
    """n well-separated bright RGB colours (golden-ratio hues), the same for the same n."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 1.0)) for i in range(n)]


def binary_masks(prediction: dict, threshold: float = 0.5) -> np.ndarray:
    """N×H×W bool from torchvision's N×1×H×W mask probabilities."""
    masks = prediction["masks"]
    masks = masks.detach().cpu().numpy() if hasattr(masks, "detach") else np.asarray(masks)
    return (masks[:, 0] if masks.ndim == 4 else masks) >= threshold


def confident(prediction: dict, min_score: float) -> dict:
    """The instances of ``prediction`` that score at least ``min_score`` (ground truth, without scores: all)."""
    if "scores" not in prediction or not min_score:
        return prediction
    keep = prediction["scores"] >= min_score
    return {k: v[keep] if k in ("boxes", "labels", "scores", "masks") else v for k, v in prediction.items()}


def instances(image: np.ndarray, prediction: dict, class_names, alpha: float = 0.45) -> np.ndarray:
    """Masks blended in colour with their outline, boxes, and "class score" labels ("class" for ground truth,
    which has no ``scores``). The most confident instance is drawn last, so its mask and label lie on top of the
    weaker detections of the same object (torchvision lists them strongest first); colours follow that list."""
    out = image.copy()
    masks = binary_masks(prediction)
    boxes = prediction["boxes"].detach().cpu().numpy().round().astype(int)
    labels = prediction["labels"].tolist()
    scores = prediction["scores"].tolist() if "scores" in prediction else [None] * len(labels)
    colours = palette(len(labels))
    order = np.argsort([i if s is None else s for i, s in enumerate(scores)], kind="stable")  # weakest first
    for i in order:
        mask, box, colour = masks[i], boxes[i], colours[i]
        out[mask] = (out[mask] * (1 - alpha) + np.array(colour) * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, 1)
        cv2.rectangle(out, tuple(box[:2]), tuple(box[2:]), colour, 1)
    texts = [
        (class_names[lb - 1] if 0 < lb <= len(class_names) else str(lb)) + ("" if s is None else f" {s:.2f}")
        for lb, s in zip(labels, scores)
    ]
    for i, (x, y, w, h) in label_layout(masks, boxes, texts, order[::-1]).items():  # labels after every mask: on top
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colours[i], -1)
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), (0, 0, 0), 1)
        cv2.putText(out, texts[i], (x + 2, y + h - 4), FONT, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return out


FONT, FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.4


def label_layout(masks: np.ndarray, boxes: np.ndarray, texts: list[str], order) -> dict[int, tuple[int, int, int, int]]:
    """Where each label goes, {index: (x, y, w, h)}: above or below its box (stacked further out when taken),
    on no other label and, where a place allows, on no other instance's mask; ``order``: who chooses first."""
    h_img, w_img = masks.shape[1:] if len(masks) else (0, 0)
    count = masks.sum(0, dtype=np.int32).astype(np.float64) if len(masks) else None
    integral = cv2.integral(count) if len(masks) else None  # (H+1)×(W+1): mask pixels in any rectangle at O(1)
    placed: dict[int, tuple[int, int, int, int]] = {}
    for i in order:
        (tw, th), _ = cv2.getTextSize(texts[i], FONT, FONT_SCALE, 1)
        w, h = min(tw + 4, w_img), min(th + 7, h_img)
        best = None
        for x, y in _candidates(boxes[i], w, h, w_img, h_img):
            if any(_overlap((x, y, w, h), r) for r in placed.values()):
                continue
            covered = integral[y + h, x + w] - integral[y, x + w] - integral[y + h, x] + integral[y, x]
            foreign = int(covered - masks[i][y : y + h, x : x + w].sum())  # other instances' mask pixels under it
            if best is None or foreign < best[0]:
                best = (foreign, (x, y, w, h))
            if foreign == 0:
                break
        if best is not None:
            placed[i] = best[1]
    return placed


def _candidates(box, w: int, h: int, w_img: int, h_img: int):
    """Label corners nearest the box first: above it, below it, then stacked further out; left- then right-aligned."""
    x1, y1, x2, y2 = (int(v) for v in box)
    for k in range(12):
        for y in (y1 - h - k * h, y2 + 1 + k * h):
            for x in (x1, x2 - w):
                if 0 <= y <= h_img - h:
                    yield min(max(x, 0), w_img - w), y
    yield min(max(x1, 0), w_img - w), min(max(y1, 0), h_img - h)  # inside the box when nothing else is free


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def splash(image: np.ndarray, prediction: dict) -> np.ndarray:
    """Detected instances keep their colour; everything else turns gray (R = G = B)."""
    gray = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    masks = binary_masks(prediction)
    inside = masks.any(axis=0) if len(masks) else np.zeros(image.shape[:2], bool)
    return np.where(inside[..., None], image, gray)


TITLE_HEIGHT = 18  # px of the title strip above a drawn panel (galleries, report sheets)


def with_title(image: np.ndarray, title: str, height: int = TITLE_HEIGHT, scale: float = 0.45) -> np.ndarray:
    """``image`` under a white strip ``height`` px high with ``title`` in black."""
    strip = np.full((height, image.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, title, (4, height - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, image])
