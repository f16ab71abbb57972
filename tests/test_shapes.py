import numpy as np

from masklab.data.shapes import ShapesDataset
from masklab.data.target import validate_target


def test_deterministic_for_seed_and_index():
    a, b = ShapesDataset(10, 64, seed=3), ShapesDataset(10, 64, seed=3)
    for i in (0, 7):
        (ia, ta), (ib, tb) = a[i], b[i]
        assert np.array_equal(ia, ib) and np.array_equal(ta["masks"], tb["masks"])
    assert not np.array_equal(a[0][0], a[1][0])
    assert not np.array_equal(a[0][0], ShapesDataset(10, 64, seed=4)[0][0])


def test_split_is_a_range_of_indices():
    train, val = ShapesDataset(5, 64, start=0), ShapesDataset(5, 64, start=100)
    assert np.array_equal(ShapesDataset(200, 64)[100][0], val[0][0])
    assert {t["image_id"] for _, t in (train[i] for i in range(5))}.isdisjoint({t["image_id"] for _, t in (val[i] for i in range(5))})


def test_masks_show_only_visible_parts_and_match_the_pixels():
    ds = ShapesDataset(60, 96, max_instances=6, seed=1)
    for i in range(len(ds)):
        image, target = ds[i]
        validate_target(target, image.shape[:2])
        masks = target["masks"].numpy().astype(bool)
        assert 1 <= len(masks) <= 6 and set(target["labels"].tolist()) <= {1, 2, 3, 4}
        assert masks.sum(0).max() <= 1, "visible masks must not overlap"
        for m in masks:  # every visible pixel of a shape has that shape's (flat) colour
            assert len(np.unique(image[m], axis=0)) == 1


def test_later_shapes_occlude_earlier_ones():
    ds = ShapesDataset(100, 64, max_instances=4, seed=0, min_visible=0)
    hidden = 0
    for i in range(len(ds)):
        _, full, _ = ds.layers(i)
        _, visible, _ = ds.generate(i)
        assert ((visible <= full).all()), "a visible mask lies inside its drawn shape"
        # the last-drawn shape is never hidden; an earlier one loses exactly what later ones cover
        assert np.array_equal(visible[-1], full[-1])
        for k in range(len(full) - 1):
            covered = full[k + 1:].any(axis=0)
            assert np.array_equal(visible[k].astype(bool), full[k].astype(bool) & ~covered)
            hidden += int((full[k].astype(bool) & covered).any())
    assert hidden > 10  # overlaps do happen
