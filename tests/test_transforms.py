"""Transforms move boxes with masks, and drop instances whose mask vanishes."""

import os
import sys

import albumentations as A
import numpy as np
import pytest
import torch

from conftest import SRC
from masklab.data.shapes import ShapesDataset
from masklab.data.target import make_target, masks_to_boxes, validate_target
from masklab.data.transforms import Augment, CapInstances, Compose, to_tensor


def test_flip_moves_masks_and_boxes_together():
    image, target = ShapesDataset(1, 96, seed=11)[0]
    out_image, out = Augment([A.HorizontalFlip(p=1.0)])(image, target)
    assert np.array_equal(out_image, image[:, ::-1])
    assert np.array_equal(out["masks"].numpy(), target["masks"].numpy()[:, :, ::-1])
    x1, y1, x2, y2 = target["boxes"].unbind(1)
    assert torch.equal(out["boxes"], torch.stack([96 - x2, y1, 96 - x1, y2], 1))
    validate_target(out, out_image.shape[:2])


def test_instance_whose_mask_vanishes_is_dropped_with_its_label():
    masks = np.zeros((2, 40, 40), np.uint8)
    masks[0, 2:8, 2:8] = 1  # left: cropped away
    masks[1, 20:30, 25:35] = 1  # right: kept
    image = np.zeros((40, 40, 3), np.uint8)
    _, out = Augment([A.Crop(x_min=20, y_min=0, x_max=40, y_max=40)])(image, make_target(masks, [3, 4], 1))
    assert out["labels"].tolist() == [4]
    assert out["boxes"].tolist() == [[5.0, 20.0, 15.0, 30.0]]
    assert np.array_equal(out["boxes"].numpy(), masks_to_boxes(out["masks"].numpy()))


def test_cap_keeps_the_largest_instances_and_to_tensor_scales():
    masks = np.zeros((3, 20, 20), np.uint8)
    masks[0, :2, :2], masks[1, :10, :10], masks[2, 10:15, 10:15] = 1, 1, 1
    image, target = Compose([CapInstances(2), to_tensor])(
        np.full((20, 20, 3), 255, np.uint8), make_target(masks, [1, 2, 3], 0)
    )
    assert target["labels"].tolist() == [2, 3] and target["area"].tolist() == [100.0, 25.0]
    assert image.shape == (3, 20, 20) and image.dtype == torch.float32 and float(image.max()) == 1.0


AUGMENTATIONS = ["none", "flip", "geometric", "color", "blur_sharpen", "clahe", "equalize", "full"]


def _always(cfg_aug):
    """The group's transforms with every probability set to 1, so each one really runs."""
    for t in cfg_aug.transforms.values():
        if "p" in t:
            t.p = 1.0
    return cfg_aug


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_every_augmentation_group_keeps_boxes_tight_and_masks_nonempty(name):
    from hydra.utils import instantiate

    from conftest import compose_cfg

    augment = instantiate(_always(compose_cfg([f"augmentation={name}"]).augmentation), _convert_="all")
    data = ShapesDataset(12, 96, max_instances=4, seed=5)
    changed = 0
    for i in range(len(data)):
        image, target = data[i]
        out_image, out = augment(image.copy(), target)
        validate_target(out, out_image.shape[:2])  # labels >= 1, no empty mask, masks at image size
        boxes, tight = out["boxes"].numpy(), masks_to_boxes(out["masks"].numpy())
        assert np.abs(boxes - tight).max(initial=0) <= 1
        assert len(out["labels"]) <= len(target["labels"])
        changed += not np.array_equal(out_image, image)
    assert (changed == 0) if name == "none" else changed >= 10  # each group really alters the images


def test_full_is_the_union_of_the_other_groups():
    from conftest import compose_cfg

    full = set(compose_cfg(["augmentation=full"]).augmentation.transforms)
    parts = set()
    for name in AUGMENTATIONS[1:-1]:
        parts |= set(compose_cfg([f"augmentation={name}"]).augmentation.transforms)
    assert full == parts and len(full) == 8


def test_geometric_moves_masks_with_the_image():
    """After an affine warp the shape's pixels (its colour) still sit under its mask."""
    image, target = ShapesDataset(1, 96, max_instances=1, seed=3)[0]
    colour = image[target["masks"][0].numpy().astype(bool)].mean(0)
    out_image, out = Augment([A.Affine(rotate=(25, 25), translate_percent=(0.1, 0.1), p=1.0)])(image, target)
    inside = out_image[out["masks"][0].numpy().astype(bool)].mean(0)
    assert np.abs(inside - colour).max() < 12


def test_augmentation_follows_the_torch_seed():
    """albumentations 2 seeds itself from OS entropy: two runs with one seed used to flip differently."""
    image = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((1, 8, 8), np.uint8)
    mask[0, 2:6, 0:3] = 1
    target = make_target(mask, np.array([1]), 0)

    def flips(seed: int) -> list[bool]:
        torch.manual_seed(seed)
        augment = Augment([A.HorizontalFlip(p=0.5)])
        return [bool(augment(image, target)[1]["masks"][0, 2, 7]) for _ in range(32)]

    first = flips(42)
    assert first == flips(42)  # same seed, same flips
    assert 4 < sum(first) < 28  # p=0.5 is still random within a run
    assert first != flips(43)


def test_importing_masklab_asks_no_server_for_a_newer_albumentations():
    """albumentations asks pypi.org for a newer version of itself at import: offline (here a proxy that refuses),
    a warning in every process, after up to 2 s. masklab turns that off; NO_ALBUMENTATIONS_UPDATE=0 turns it on."""
    import subprocess

    from helpers.services import free_port

    proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens: the request fails at once
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    env |= {"https_proxy": proxy, "HTTPS_PROXY": proxy, "PYTHONPATH": str(SRC)}

    def stderr(**extra) -> str:
        cmd = [sys.executable, "-c", "import masklab.data.transforms"]
        return subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True, check=True).stderr

    assert "Error fetching version info" in stderr(NO_ALBUMENTATIONS_UPDATE="0")
    assert stderr() == ""
