"""Transforms ``(image, target) -> (image, target)`` on top of albumentations.

Boxes and masks move together: albumentations moves the masks, the boxes are recomputed as the
tight boxes of the moved masks, and an instance whose mask vanished is dropped with its label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from masklab.data.target import make_target


class Augment:
    """Apply an albumentations pipeline to an H×W×3 uint8 image and its target's masks.

    albumentations 2 draws from its own generators, seeded from OS entropy unless told otherwise, so
    ``seed_everything`` does not reach them: the pipeline is seeded from torch's generator at every call, which the
    training loader seeds per image (:class:`masklab.data.datamodule.Seeded`).
    """

    def __init__(self, transforms: Sequence[A.BasicTransform]):
        self.pipeline = A.Compose(list(transforms)) if transforms else None

    def __call__(self, image: np.ndarray, target: dict):
        if self.pipeline is None:
            return image, target
        self.pipeline.set_random_seed(int(torch.randint(2**31 - 1, ()).item()))
        masks = target["masks"].numpy()
        out = self.pipeline(image=image, masks=list(masks) if len(masks) else [])
        new_masks = (
            np.stack(out["masks"]).astype(np.uint8) if len(masks) else np.zeros((0, *out["image"].shape[:2]), np.uint8)
        )
        new = make_target(new_masks, target["labels"].numpy(), target["image_id"], target["iscrowd"].numpy())
        return out["image"], new


def build_augmentation(transforms: Sequence[A.BasicTransform] | dict = ()) -> Augment:
    """Hydra entry point of the ``augmentation`` group: transforms as a list, or a dict keyed by name
    (so ``full`` merges the other options and ``augmentation.transforms.flip.p=1`` reaches one)."""
    return Augment(list(transforms.values()) if isinstance(transforms, dict) else transforms)


class ScaleCrop:
    """Tiles: scale the image as the model would (long side to ``image_size``) and take a ``crop_size`` window,
    so small objects keep their pixels while a step stays cheap. The window holds a random instance's centre with
    probability ``on_instance`` (else it is uniform), so few steps are spent on empty background. Only the window
    is resized (masks of a dense image at full scale would not fit in memory); instances outside it are dropped."""

    def __init__(self, image_size: int, crop_size: int, on_instance: float = 0.7):
        self.image_size, self.crop_size, self.on_instance = int(image_size), int(crop_size), on_instance

    def _origin(self, n: int, c: int, centre: float | None) -> int:
        """Window start (scaled px) on an axis of ``n`` scaled px for a window of ``c``, around ``centre`` if given."""
        room = max(0, n - c)
        if centre is None:
            return int(torch.randint(0, room + 1, ()).item())
        return int(min(room, max(0, centre - torch.randint(0, c, ()).item())))

    def __call__(self, image: np.ndarray, target: dict):
        h, w = image.shape[:2]
        s = self.image_size / max(h, w)
        out_h, out_w = min(self.crop_size, round(h * s)), min(self.crop_size, round(w * s))
        centre = None
        if len(target["boxes"]) and torch.rand(()).item() < self.on_instance:
            b = target["boxes"][torch.randint(0, len(target["boxes"]), ()).item()]
            centre = (float(b[1] + b[3]) / 2 * s, float(b[0] + b[2]) / 2 * s)
        y0 = self._origin(round(h * s), out_h, centre and centre[0])
        x0 = self._origin(round(w * s), out_w, centre and centre[1])
        y1, x1 = min(h, round((y0 + out_h) / s)), min(w, round((x0 + out_w) / s))
        y0, x0 = min(int(y0 / s), y1 - 1), min(int(x0 / s), x1 - 1)  # the window in source pixels
        image = cv2.resize(image[y0:y1, x0:x1], (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        masks = target["masks"].numpy()[:, y0:y1, x0:x1]
        inside = masks.reshape(len(masks), -1).any(1)
        small = [cv2.resize(m, (out_w, out_h), interpolation=cv2.INTER_NEAREST) for m in masks[inside]]
        masks = np.stack(small) if small else np.zeros((0, out_h, out_w), np.uint8)
        return image, make_target(
            masks, target["labels"].numpy()[inside], target["image_id"], target["iscrowd"].numpy()[inside]
        )


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
