import numpy as np
import pytest
import torch

from masklab.data.target import make_target, masks_to_boxes, validate_target


def test_boxes_are_tight_boxes_of_masks():
    masks = np.zeros((2, 10, 12), np.uint8)
    masks[0, 2:5, 3:7] = 1  # rows 2..4, cols 3..6
    masks[1, 9, 11] = 1
    assert masks_to_boxes(masks).tolist() == [[3, 2, 7, 5], [11, 9, 12, 10]]


def test_make_target_drops_empty_instances_with_their_labels():
    masks = np.zeros((3, 8, 8), np.uint8)
    masks[0, :2, :2] = 1
    masks[2, 4:, 4:] = 1
    t = make_target(masks, [1, 2, 3], image_id=7)
    validate_target(t, (8, 8))
    assert t["labels"].tolist() == [1, 3]
    assert t["area"].tolist() == [4.0, 16.0]
    assert t["boxes"].dtype == torch.float32 and t["masks"].dtype == torch.uint8 and t["image_id"] == 7


def test_empty_image_has_0x4_boxes():
    t = make_target(np.zeros((0, 5, 5), np.uint8), [], image_id=1)
    validate_target(t)
    assert t["boxes"].shape == (0, 4)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("labels", torch.tensor([0]), "0 is background"),
        ("boxes", torch.tensor([[5.0, 5.0, 5.0, 9.0]]), "x2 > x1"),
        ("labels", torch.tensor([1], dtype=torch.int32), "int64"),
    ],
)
def test_validate_target_names_the_problem(field, value, message):
    masks = np.zeros((1, 10, 10), np.uint8)
    masks[0, 5:9, 5:9] = 1
    t = make_target(masks, [1], image_id=3)
    t[field] = value
    with pytest.raises(ValueError, match=message):
        validate_target(t)
