"""A synthetic development proxy for dense, small objects, written as files and read like user data.

Textured, unevenly lit backgrounds (several octaves of smoothed noise) with 20-120 objects per image of
4-60 px (long side; log-normal, median ~13 px) on 512-768 px images, in clusters and scattered, partly
occluding each other, in three classes told apart by shape and colour family (``seed``: ellipses,
``pebble``: rounded blobs, ``shard``: triangles). As in photos of such scenes, objects are only partly
set off from the ground (their colour is a blend of the class colour and the ground under them), unlabelled
grit and fibres of similar size lie among them, and the whole image is slightly out of focus. Images are
written as JPEG into a temporary folder, then go through ``prepare.py`` like any source (statistics, ``auto``,
training). It stands for seed trays, insects on sticky traps or parts on a conveyor; do not tune the real-data
defaults on it alone.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from masklab.data.formats import Source, SourceImage, SourceInstance

CLASS_NAMES = ("seed", "pebble", "shard")
#: base colour (BGR-free RGB) of each class; each object varies around it
PALETTE = {"seed": (150, 95, 45), "pebble": (200, 200, 190), "shard": (40, 110, 170)}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Multi-octave brightness noise on one tint, a little colour noise and a lighting gradient (H×W×3 uint8):
    soil, cloth or a tray."""
    tint = rng.integers(70, 170, 3).astype(np.float32)
    lum, chroma = np.zeros((h, w), np.float32), np.zeros((h, w, 3), np.float32)
    for cells, amp in ((4, 30), (16, 18), (64, 10), (256, 8)):
        noise = rng.normal(0, 1, (cells, max(2, cells * w // h))).astype(np.float32)
        lum += amp * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    chroma += 8 * cv2.resize(rng.normal(0, 1, (8, 8, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = 25 * ((xx / w - 0.5) * np.cos(angle) + (yy / h - 0.5) * np.sin(angle))
    return np.clip(tint + chroma + (lum + light)[..., None], 0, 255).astype(np.uint8)


def _shape(kind: str, mask: np.ndarray, cx: float, cy: float, size: float, rng: np.random.Generator) -> None:
    """Fill one object of long side ``size`` px at (cx, cy) into ``mask`` (in place)."""
    angle = rng.uniform(0, 180)
    if kind == "seed":
        cv2.ellipse(
            mask, (round(cx), round(cy)), (max(1, round(size / 2)), max(1, round(size / 4))), angle, 0, 360, 1, -1
        )
    elif kind == "pebble":
        t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        r = size / 2 * rng.uniform(0.75, 1.0, len(t))
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    else:
        a = np.deg2rad(angle) + np.array([0, 2.3, 4.0])
        pts = np.stack([cx + size / 2 * np.cos(a), cy + size / 2 * np.sin(a)], 1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)


def _paint(image: np.ndarray, mask: np.ndarray, colour: np.ndarray, rng: np.random.Generator) -> None:
    """Shade the object: its colour blended with the ground under it, darker towards the edge, with grain."""
    ys, xs = np.nonzero(mask)
    alpha = rng.uniform(0.3, 0.7)  # share of the class colour; the rest is the ground's
    base = alpha * colour[None] + (1 - alpha) * image[ys, xs].astype(np.float32)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)[ys, xs]
    shade = 0.75 + 0.25 * np.minimum(dist / 3.0, 1.0)
    pix = base * shade[:, None] + rng.normal(0, 8, (len(ys), 3))
    image[ys, xs] = np.clip(pix, 0, 255).astype(np.uint8)


def _clutter(image: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Unlabelled grit (specks of 2-16 px) and fibres in the ground's own hues, drawn in place."""
    h, w = image.shape[:2]
    for _ in range(count):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        tone = np.clip(image[y, x].astype(np.float32) * rng.uniform(0.55, 1.45), 0, 255)
        colour = tuple(float(c) for c in tone)
        if rng.random() < 0.7:
            axes = (max(1, int(rng.integers(1, 9))), max(1, int(rng.integers(1, 6))))
            cv2.ellipse(image, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            end = (x + int(rng.integers(-25, 26)), y + int(rng.integers(-25, 26)))
            cv2.line(image, (x, y), end, colour, 1)


def generate(
    index: int,
    seed: int = 0,
    min_instances: int = 20,
    max_instances: int = 120,
    image_range=(512, 768),
    size_range=(4.0, 60.0),
    min_visible: int = 6,
):
    """Image ``index``: (H×W×3 uint8, visible masks N×H×W uint8, class names); depends on (seed, index) only."""
    rng = np.random.default_rng([seed, index])
    h, w = (int(v) for v in rng.integers(image_range[0], image_range[1] + 1, 2))
    image = _background(rng, h, w)
    _clutter(image, rng, int(rng.integers(60, 200)))
    n = int(rng.integers(min_instances, max_instances + 1))
    centres = rng.uniform([0, 0], [w, h], (int(rng.integers(2, 6)), 2))
    masks, names = [], []
    for _ in range(n):
        kind = CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))]
        size = float(np.clip(rng.lognormal(np.log(13), 0.6), *size_range))
        c = (
            centres[int(rng.integers(len(centres)))] + rng.normal(0, 45, 2)
            if rng.random() < 0.6
            else rng.uniform([0, 0], [w, h])
        )
        mask = np.zeros((h, w), np.uint8)
        _shape(kind, mask, float(np.clip(c[0], 0, w - 1)), float(np.clip(c[1], 0, h - 1)), size, rng)
        if not mask.any():
            continue
        colour = np.array(PALETTE[kind], np.float32) * rng.uniform(0.8, 1.2) + rng.normal(0, 12, 3)
        _paint(image, mask, colour, rng)
        masks.append(mask)
        names.append(kind)
    visible = np.stack(masks)
    for i in range(len(visible) - 1):  # later objects occlude earlier ones
        visible[i] &= ~visible[i + 1 :].any(axis=0)
    keep = visible.reshape(len(visible), -1).sum(1) >= min_visible
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.1))  # slight defocus, sigma in px
    return image, visible[keep], [nm for nm, k in zip(names, keep) if k]


def _mask(height: int, width: int, *, mask: np.ndarray) -> np.ndarray:
    return mask


def read(num_images: int = 50, seed: int = 0, **kwargs) -> Source:
    """``num_images`` proxy images as a :class:`Source` (split by ``data.prepare.split`` like user data)."""
    tmp = Path(tempfile.mkdtemp(prefix="masklab-dense-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    source = Source([], categories=list(CLASS_NAMES))
    for i in range(num_images):
        image, masks, names = generate(i, seed, **kwargs)
        path = tmp / f"dense_{i:04d}.jpg"
        Image.fromarray(image).save(path, quality=92)
        record = f"dense_small image {i}"
        instances = [
            SourceInstance(nm, partial(_mask, mask=m), f"{record} instance {k}")
            for k, (m, nm) in enumerate(zip(masks, names))
        ]
        source.images.append(SourceImage(path, record, instances))
    return source
