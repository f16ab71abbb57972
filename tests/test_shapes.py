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
    assert {t["image_id"] for _, t in (train[i] for i in range(5))}.isdisjoint(
        {t["image_id"] for _, t in (val[i] for i in range(5))}
    )


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
        assert (visible <= full).all(), "a visible mask lies inside its drawn shape"
        # the last-drawn shape is never hidden; an earlier one loses exactly what later ones cover
        assert np.array_equal(visible[-1], full[-1])
        for k in range(len(full) - 1):
            covered = full[k + 1 :].any(axis=0)
            assert np.array_equal(visible[k].astype(bool), full[k].astype(bool) & ~covered)
            hidden += int((full[k].astype(bool) & covered).any())
    assert hidden > 10  # overlaps do happen


def test_max_overlap_keeps_every_instance_mostly_visible():
    def fractions(ds):
        out = []
        for i in range(len(ds)):
            _, full, _ = ds.layers(i)
            _, visible, _ = ds.generate(i)
            out += (
                [v.sum() / f.sum() for v, f in zip(visible, full[-len(visible) :])] if len(visible) == len(full) else []
            )
        return np.array(out)

    unlimited = ShapesDataset(100, 128, max_instances=4, seed=0)
    limited = ShapesDataset(100, 128, max_instances=4, seed=0, max_overlap=0.3)
    free, capped = fractions(unlimited), fractions(limited)
    assert (free < 0.2).sum() >= 5  # slivers whose class no model can tell
    assert capped.min() >= 0.25  # Matterport's rule: no shape covers most of another
    assert (capped < 0.5).mean() < (free < 0.5).mean() / 3
    for i in range(100):  # a dropped shape leaves the others where they were: limited = unlimited minus some
        _, full_u, labels_u = unlimited.layers(i)
        _, full_l, labels_l = limited.layers(i)
        rows = [next(k for k in range(len(full_u)) if np.array_equal(full_u[k], m)) for m in full_l]
        assert rows == sorted(rows) and labels_u[rows].tolist() == labels_l.tolist()


def test_shapes_option_sets_the_main_job_recipe_and_the_command_line_wins():
    from conftest import compose_cfg

    cfg = compose_cfg([], tiny=False)  # what `python src/train.py` runs
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.optimizer.lr == 1e-3
    assert cfg.schedule.epochs == 6 and cfg.anchors.sizes[0] == 8 and cfg.data.train.max_overlap == 0.3
    cfg = compose_cfg(["optimizer=sgd", "schedule.epochs=3"], tiny=False)
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.schedule.epochs == 3
    assert (
        compose_cfg(["schedule=step"], tiny=False).schedule.epochs == 6
    )  # its milestones move with it (test_schedules)
    other = compose_cfg(["data=pennfudan"], tiny=False)  # prepared data: fine-tuning SGD, epochs from its step budget
    assert (
        other.optimizer._target_ == "torch.optim.SGD" and other.optimizer.lr == 0.01 and other.schedule.epochs == "auto"
    )
    assert compose_cfg(["data=pennfudan", "~data.epochs"], tiny=False).schedule.epochs == 10  # cosine's own
