"""Synthetic shapes, generated on the fly (the embedded default dataset; no files needed).

Like the Matterport "shapes" sample: squares, circles, triangles and ellipses of random colour, size
and position on a random flat background. Half-sizes are drawn from ``size_range`` × image size
(Matterport: 20–32 px on 128 px images, i.e. 0.15–0.25), and a shape's colour differs from the
background by at least ``min_contrast`` (sum over RGB) so that every label is visible.
Shapes may overlap; later shapes occlude earlier ones and
the masks show only the visible part (an instance left with fewer than ``min_visible`` pixels is
dropped). ``max_overlap`` limits how much: a shape whose box overlaps an earlier shape's box by more
than this IoU is not drawn (Matterport: 0.3, "to avoid shapes covering each other"; None = no
limit, where a shape can be hidden down to a sliver whose class no model can tell).
Image ``i`` depends only on ``(seed, start + i)``, so a split is a range of indices.
"""

from __future__ import annotations

import cv2
import numpy as np
from torch.utils.data import Dataset

from masklab.data.target import make_target

CLASS_NAMES = ("square", "circle", "triangle", "ellipse")


def _draw(kind: str, canvas: np.ndarray, cx: int, cy: int, r: int, angle: float, colour) -> None:
    """Fill one shape of half-size ``r`` px centred at (cx, cy) on ``canvas`` (in place)."""
    if kind == "square":
        cv2.rectangle(canvas, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
    elif kind == "circle":
        cv2.circle(canvas, (cx, cy), r, colour, -1)
    elif kind == "triangle":
        pts = [
            (cx + r * np.cos(angle + k * 2 * np.pi / 3), cy + r * np.sin(angle + k * 2 * np.pi / 3)) for k in range(3)
        ]
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], colour)
    else:  # ellipse: axes r and r/2, rotated
        cv2.ellipse(canvas, (cx, cy), (r, max(2, r // 2)), np.degrees(angle), 0, 360, colour, -1)


def _iou(a, b) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


class ShapesDataset(Dataset):
    """``num_images`` images of ``image_size``² px with 1..``max_instances`` shapes each."""

    class_names = CLASS_NAMES

    def __init__(
        self,
        num_images: int = 500,
        image_size: int = 128,
        max_instances: int = 4,
        seed: int = 0,
        start: int = 0,
        size_range: tuple[float, float] = (0.15, 0.25),
        min_contrast: int = 60,
        min_visible: int = 20,
        max_overlap: float | None = None,
        transform=None,
    ):
        self.num_images, self.image_size, self.max_instances = num_images, image_size, max_instances
        self.max_overlap = max_overlap
        self.seed, self.start, self.min_visible, self.transform = seed, start, min_visible, transform
        self.size_range, self.min_contrast = tuple(size_range), min_contrast

    def __len__(self) -> int:
        return self.num_images

    def layers(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image, the *full* shape masks in drawing order (N×H×W uint8) and labels (N, 1-based)."""
        rng = np.random.default_rng([self.seed, self.start + index])
        s = self.image_size
        image = np.empty((s, s, 3), np.uint8)
        image[:] = rng.integers(0, 256, 3)
        n = int(rng.integers(1, self.max_instances + 1))
        masks, labels, boxes = np.zeros((n, s, s), np.uint8), np.zeros(n, np.int64), []
        for _ in range(n):
            label = int(rng.integers(len(CLASS_NAMES)))
            lo, hi = (max(2, int(f * s)) for f in self.size_range)
            r = int(rng.integers(lo, max(hi, lo + 1)))  # half-size, px
            cx, cy = (int(v) for v in rng.integers(r, s - r, 2))
            colour = self._colour(rng, image[0, 0])
            angle = float(rng.uniform(0, np.pi))
            box = (cx - r, cy - r, cx + r, cy + r)
            if self.max_overlap is not None and any(_iou(box, b) > self.max_overlap for b in boxes):
                continue  # drawn values are still consumed: the other shapes stay where they were
            k = len(boxes)
            boxes.append(box)
            _draw(CLASS_NAMES[label], masks[k], cx, cy, r, angle, 1)
            image[masks[k].astype(bool)] = colour
            labels[k] = label + 1
        return image, masks[: len(boxes)], labels[: len(boxes)]

    def _colour(self, rng, background) -> tuple[int, int, int]:
        """A random colour at least ``min_contrast`` (sum of |RGB| differences) from the background."""
        while True:
            colour = rng.integers(0, 256, 3)
            if np.abs(colour - background.astype(int)).sum() >= self.min_contrast:
                return tuple(int(c) for c in colour)

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image (H×W×3 uint8), *visible* masks (N×H×W uint8) and labels of image ``index``."""
        image, masks, labels = self.layers(index)
        visible = masks.copy()
        for i in range(len(masks) - 1):  # occlusion: every later shape hides what lies under it
            visible[i] &= ~masks[i + 1 :].any(axis=0)
        keep = visible.reshape(len(visible), -1).sum(axis=1) >= self.min_visible
        return image, visible[keep], labels[keep]

    def __getitem__(self, index: int):
        image, masks, labels = self.generate(index)
        target = make_target(masks, labels, image_id=self.start + index)
        return self.transform(image, target) if self.transform is not None else (image, target)
