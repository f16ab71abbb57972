"""Drawn instances stay readable: every label on a solid background, on no other label and on no other mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masklab.viz.draw import instances, label_layout, palette


def two_overlapping(offset_y: int):
    masks = np.zeros((2, 200, 240), bool)
    masks[0, 60:140, 50:150] = True
    masks[1, 60 + offset_y : 140 + offset_y, 70:170] = True
    boxes = np.array([[50, 60, 150, 140], [70, 60 + offset_y, 170, 140 + offset_y]])
    return masks, boxes


@pytest.mark.parametrize("offset_y", [0, 3, 20])  # same top edge, nearly, and apart
def test_labels_of_two_overlapping_instances_sit_on_neither_each_other_nor_the_other_mask(offset_y):
    masks, boxes = two_overlapping(offset_y)
    placed = label_layout(masks, boxes, ["triangle 0.90", "ellipse 0.62"], [0, 1])
    assert set(placed) == {0, 1}
    (ax, ay, aw, ah), (bx, by, bw, bh) = placed[0], placed[1]
    assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay  # the two text boxes do not overlap
    for i, (x, y, w, h) in placed.items():
        assert not masks[1 - i][y : y + h, x : x + w].any()  # nor cover the other instance's mask
        assert 0 <= x and x + w <= 240 and 0 <= y and y + h <= 200


def test_drawn_labels_have_their_instances_colour_behind_black_text():
    masks, boxes = two_overlapping(3)
    pred = {
        "masks": torch.from_numpy(masks[:, None].astype(np.float32)),
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.62]),
    }
    out = instances(np.full((200, 240, 3), 200, np.uint8), pred, ["triangle", "ellipse"])
    placed = label_layout(masks, boxes, ["triangle 0.90", "ellipse 0.62"], [0, 1])
    for i, (x, y, w, h) in placed.items():
        patch = out[y + 1 : y + h - 1, x + 1 : x + w - 1].reshape(-1, 3)
        colours = {tuple(c) for c in patch}
        assert tuple(palette(2)[i]) in colours and (0, 0, 0) in colours  # a solid label background with the text on it
        assert np.mean(np.all(patch == palette(2)[i], axis=1)) > 0.5


def test_the_report_sheet_of_one_run_is_two_cells_with_one_title_each():
    from masklab.track.report import HEADER, prediction_sheet
    from masklab.viz.draw import with_title

    panel = np.full((40, 50, 3), 90, np.uint8)
    gallery = np.concatenate(
        [
            with_title(panel, "ground truth"),
            np.full((40 + HEADER, 4, 3), 255, np.uint8),
            with_title(panel, "prediction"),
        ],
        axis=1,
    )  # what eval/gallery.py writes
    sheet = prediction_sheet([{"run_id": "a", "run": "r1", "val/segm_AP": 0.5}], {"a": gallery}, "val/segm_AP")
    assert sheet.shape[:2] == (40 + HEADER, 2 * (50 + 4))  # ground truth and the run: no blank cells
    assert (sheet[HEADER:, :50] == 90).all()  # under the one title strip, the panel itself (no second strip)


def test_the_final_table_says_why_a_metric_has_no_value():
    from masklab.track.summary import metrics_table

    table = metrics_table({"val/segm_APl": float("nan"), "val/segm_AP50": 0.9244, "test/bbox_APs": float("nan")})
    assert "n/a (no large objects in val)" in table and "n/a (no small objects in test)" in table
    assert "0.9244" in table and "nan" not in table
