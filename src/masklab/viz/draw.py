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
        mask, box, label, score, colour = masks[i], boxes[i], labels[i], scores[i], colours[i]
        out[mask] = (out[mask] * (1 - alpha) + np.array(colour) * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, 1)
        cv2.rectangle(out, tuple(box[:2]), tuple(box[2:]), colour, 1)
        name = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
        text = name if score is None else f"{name} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        y = max(box[1], th + 2)
        cv2.rectangle(out, (box[0], y - th - 2), (box[0] + tw + 2, y), colour, -1)
        cv2.putText(out, text, (box[0] + 1, y - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def splash(image: np.ndarray, prediction: dict) -> np.ndarray:
    """Detected instances keep their colour; everything else turns gray (R = G = B)."""
    gray = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    masks = binary_masks(prediction)
    inside = masks.any(axis=0) if len(masks) else np.zeros(image.shape[:2], bool)
    return np.where(inside[..., None], image, gray)


def with_title(image: np.ndarray, title: str, height: int = 18, scale: float = 0.45) -> np.ndarray:
    """``image`` under a white strip ``height`` px high with ``title`` in black."""
    strip = np.full((height, image.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, title, (4, height - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, image])
