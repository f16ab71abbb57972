"""Transforms ``(image, target) -> (image, target)`` on top of albumentations.

Boxes and masks move together: albumentations moves the masks, the boxes are recomputed as the
tight boxes of the moved masks, and an instance whose mask vanished is dropped with its label.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import albumentations as A
import numpy as np
import torch

from masklab.data.target import make_target


class Augment:
    """Apply an albumentations pipeline to an H×W×3 uint8 image and its target's masks.

    albumentations 2 draws from its own generators, seeded from OS entropy unless told otherwise, so
    ``seed_everything`` does not reach them and two runs with one seed augmented differently. The
    pipeline is seeded from ``torch.initial_seed()`` the first time it runs in a process: the run's
    seed in the main process, and in a DataLoader worker the per-worker seed torch derives from the
    main process's generator (different per worker and per epoch, the same in every rerun).
    """

    def __init__(self, transforms: Sequence[A.BasicTransform]):
        self.pipeline = A.Compose(list(transforms)) if transforms else None
        self._seeded_in: int | None = None  # pid of the process whose torch seed the pipeline uses

    def __call__(self, image: np.ndarray, target: dict):
        if self.pipeline is None:
            return image, target
        if self._seeded_in != os.getpid():
            self.pipeline.set_random_seed(torch.initial_seed() % 2**32)
            self._seeded_in = os.getpid()
        masks = target["masks"].numpy()
        out = self.pipeline(image=image, masks=list(masks) if len(masks) else [])
        new_masks = np.stack(out["masks"]).astype(np.uint8) if len(masks) else np.zeros((0, *out["image"].shape[:2]), np.uint8)
        new = make_target(new_masks, target["labels"].numpy(), target["image_id"], target["iscrowd"].numpy())
        return out["image"], new


def build_augmentation(transforms: Sequence[A.BasicTransform] | dict = ()) -> Augment:
    """Hydra entry point of the ``augmentation`` group: transforms as a list, or a dict keyed by name
    (so ``full`` merges the other options and ``augmentation.transforms.flip.p=1`` reaches one)."""
    return Augment(list(transforms.values()) if isinstance(transforms, dict) else transforms)


class CapInstances:
    """Keep the ``max_instances`` largest instances (Matterport's MAX_GT_INSTANCES; deterministic)."""

    def __init__(self, max_instances: int):
        self.max_instances = max_instances

    def __call__(self, image, target: dict):
        if len(target["labels"]) <= self.max_instances:
            return image, target
        keep = torch.argsort(target["area"], descending=True)[: self.max_instances].sort().values
        return image, {k: (v[keep] if torch.is_tensor(v) else v) for k, v in target.items()}


def to_tensor(image: np.ndarray, target: dict):
    """H×W×3 uint8 array -> 3×H×W float32 tensor in [0, 1] (what torchvision's detectors take)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255), target


class Compose:
    def __init__(self, steps: Sequence[Callable]):
        self.steps = [s for s in steps if s is not None]

    def __call__(self, image, target):
        for step in self.steps:
            image, target = step(image, target)
        return image, target
