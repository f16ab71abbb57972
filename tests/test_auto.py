"""Settings derived from the data: statistics stored at prepare, auto values with reasons, sentences for what
does not fit, tiles, and a budget in optimizer steps."""

from __future__ import annotations

import csv
import json
import shutil

import mlflow
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.models.detection.anchor_utils import AnchorGenerator

from conftest import TINY_MODEL, compose_cfg
from masklab import MasklabError
from masklab.data import auto
from masklab.data.canonical import digest
from masklab.data.prepare import prepare
from masklab.data.stats import split_stats
from masklab.data.target import make_target
from masklab.data.transforms import ScaleCrop


def write_coco(tmp_path, images, classes=("a", "b"), name="src"):
    """``images``: [(h, w, [(x, y, w, h, class index), ...]), ...] -> a COCO file of rectangles + image files."""
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    out = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    for i, (h, w, rects) in enumerate(images, start=1):
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(folder / f"im{i}.png")
        out["images"].append({"id": i, "file_name": f"im{i}.png", "height": h, "width": w})
        for x, y, bw, bh, c in rects:
            poly = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
            out["annotations"].append(
                {
                    "id": len(out["annotations"]) + 1,
                    "image_id": i,
                    "category_id": c + 1,
                    "segmentation": [poly],
                    "bbox": [x, y, bw, bh],
                    "iscrowd": 0,
                }
            )
    (folder / "ann.json").write_text(json.dumps(out))
    return folder


def prepare_coco(tmp_path, images, *extra, classes=("a", "b")):
    folder = write_coco(tmp_path, images, classes)
    cfg = compose_cfg(
        [
            "data=coco",
            f"data.source.annotations={folder / 'ann.json'}",
            f"data.source.images={folder}",
            f"data.root={tmp_path / 'prepared'}",
            *extra,
        ],
        tiny=False,
    )
    return prepare(cfg, progress=False), tmp_path / "prepared"


def test_statistics_of_a_tiny_written_dataset_equal_hand_counts(tmp_path):
    # image 1: 100x200 with two 10x10 boxes; image 2: 80x60 with none; image 3: 50x50 with one 20x5 box
    images = [(100, 200, [(10, 10, 10, 10, 0), (50, 50, 10, 10, 1)]), (80, 60, []), (50, 50, [(5, 5, 20, 5, 0)])]
    report, _ = prepare_coco(tmp_path, images, "data.prepare.split={train:1.0,val:0}")
    st = report["stats"]["train"]
    assert st["images"] == 3
    assert sorted(st["instance_counts"]) == [0, 1, 2]
    assert st["instances_per_image"]["max"] == 2 and st["instances_per_image"]["total"] == 3
    assert st["instances_per_class"] == {"a": 2, "b": 1}
    assert st["image_long_side"]["max"] == 200 and st["image_long_side"]["min"] == 50
    assert st["box_size"]["min"] == 10.0 and st["box_size"]["max"] == 10.0  # sqrt(10*10) and sqrt(20*5)
    assert st["aspect_ratio"]["min"] == 0.25 and st["aspect_ratio"]["max"] == 1.0  # h / w: 5/20 and 1
    assert sorted(map(tuple, st["boxes"])) == [(10, 10, 100, 200), (10, 10, 100, 200), (20, 5, 50, 50)]
    assert json.loads((tmp_path / "prepared" / "report.json").read_text())["stats"] == report["stats"]


def test_anchor_shapes_are_torchvisions():
    sizes, ratios = [6, 11, 23, 45, 91], [0.33, 1.0, 3.0]
    gen = AnchorGenerator(tuple((s,) for s in sizes), (tuple(ratios),) * len(sizes))
    cells = torch.cat([a for a in gen.cell_anchors]).numpy()
    theirs = np.stack([cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]], 1)
    assert np.array_equal(auto.anchor_shapes(sizes, ratios), theirs)


def known_boxes(rng, n=600):
    """Boxes of 8-24 px, aspect ratios 0.5-2 (h / w), at the training scale."""
    side = rng.uniform(8, 24, n)
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2), n))
    return np.stack([side / np.sqrt(aspect), side * np.sqrt(aspect)], 1)


def test_auto_anchors_reach_the_boxes_the_default_group_misses():
    wh = known_boxes(np.random.default_rng(0))
    sizes, ratios, recall = auto.fit_anchors(wh)
    assert recall >= 0.98 and auto.anchor_recall(wh, sizes, ratios) == recall
    assert auto.anchor_recall(wh, auto.GROUPS["default"], [0.5, 1.0, 2.0]) < 0.5  # 32..512 px anchors
    assert sizes == sorted(sizes) and all(b == 2 * a or abs(b - 2 * a) <= 1 for a, b in zip(sizes, sizes[1:]))


def test_where_many_anchor_sizes_reach_every_box_auto_keeps_torchvisions_size_per_stride():
    # pedestrians at 384 px (60-220 px tall, h/w ~2.7): anchors from 11 px up reach them all; the small ones put
    # them on the stride-32/64 maps (PennFudan test segm AP50 0.72-0.80 with 11-181 px, 0.89 with 16-256)
    rng = np.random.default_rng(0)
    h = rng.uniform(60, 220, 400)
    wh = np.stack([h / rng.uniform(2.0, 3.4, 400), h], 1)
    sizes, _, recall = auto.fit_anchors(wh)
    assert recall == 1.0 and sizes[0] == 32  # 8x the stride-4 map, as torchvision's COCO anchors
    assert auto.anchor_recall(wh, [11, 23, 45, 91, 181], auto.fit_anchors(wh)[1]) == 1.0  # a tie on recall alone
    tiny = known_boxes(rng)  # 8-24 px: only smaller anchors reach them, and recall still comes first
    assert auto.fit_anchors(tiny)[0][0] < 16 and auto.fit_anchors(tiny)[2] >= 0.98


def stats_of(images_by_split, classes=("a",)):
    """Statistics of synthetic splits: {split: [(h, w, [(bw, bh, class), ...]), ...]}."""
    out = {}
    for split, images in images_by_split.items():
        items = [
            {"height": h, "width": w, "anns": [{"bbox": [0, 0, bw, bh], "label": c + 1} for bw, bh, c in rects]}
            for h, w, rects in images
        ]
        out[split] = split_stats(items, classes)
    return out


def dense(n_images, per_image, size, side=400, cls=0):
    return [(side, side, [(size, size, cls)] * per_image) for _ in range(n_images)]


def prepared_cfg(tmp_path, *overrides):
    return compose_cfg(["data=prepared", "data.name=x", f"data.root={tmp_path}", *overrides], tiny=False)


def test_caps_follow_the_densest_image_and_a_cap_set_below_it_says_what_it_loses(tmp_path):
    stats = stats_of({"train": dense(3, 20, 40) + dense(2, 150, 40), "val": dense(1, 130, 40) + dense(1, 10, 40)})
    cfg, fit = auto.resolve(prepared_cfg(tmp_path), stats, quiet=True)
    assert cfg.max_gt_instances == 150 and cfg.nms.box_detections_per_img == 230  # 1.5 x 150, in tens
    assert cfg.model.rpn_post_nms_top_n_test >= 4 * 150 and cfg.rois_per_image <= 512
    assert not [a for a in fit.advice if "max_gt_instances" in a or "box_detections" in a]
    _, fit = auto.resolve(
        prepared_cfg(tmp_path, "max_gt_instances=100", "nms.box_detections_per_img=100"), stats, quiet=True
    )
    said = " ".join(fit.advice)
    assert "max_gt_instances=100 drops the 100 smallest ground-truth instances of 2 training images" in said
    assert (
        "nms.box_detections_per_img=100: val has 1 images with more objects, so at least 30 can never be found" in said
    )


def test_report_sentences_for_anchors_scale_difference_empty_split_and_a_missing_class(tmp_path):
    stats = stats_of(
        {
            "train": dense(4, 5, 12, cls=0) + dense(4, 5, 12, cls=1),
            "val": dense(3, 5, 6, cls=0),
            "test": [(400, 400, [])] * 2,
        },
        classes=("a", "b"),
    )
    cfg, fit = auto.resolve(prepared_cfg(tmp_path, "anchors=default", "data.image_size=400"), stats, quiet=True)
    said = "\n".join(fit.advice)
    assert "anchors [32, 64, 128, 256, 512] reach only" in said and "anchors=auto reaches 100%" in said
    assert (
        "train and val differ in object scale: at 400 px 0% of train instances but 100% of val are under 8 px" in said
    )
    assert "the test split has 2 images and no instances" in said
    assert "class b has no instance in the val split" in said
    assert fit.numbers["anchor_recall"] < 0.5 and fit.numbers["anchor_recall_auto"] == 1.0


def test_small_objects_on_large_images_train_on_tiles_and_large_ones_at_native_size(tmp_path):
    small = stats_of({"train": dense(4, 30, 4, side=700)})  # 4 px objects on 700 px images
    cfg, fit = auto.resolve(prepared_cfg(tmp_path), small, quiet=True)
    assert cfg.data.image_size == 1760 and cfg.data.crop_size == 320  # 700 x 10 px / 4 px, in 32s; data.auto.crop_size
    assert cfg.image_min_size == cfg.image_max_size == 1760 and "tiles" in fit.reasons["data.image_size"]
    large = stats_of({"train": dense(4, 2, 150, side=480)})
    cfg, _ = auto.resolve(prepared_cfg(tmp_path), large, quiet=True)
    assert cfg.data.image_size == 384 and cfg.data.crop_size is None  # capped at max_train_size, whole images
    cfg, _ = auto.resolve(prepared_cfg(tmp_path, "data.image_size=256", "anchors=small"), large, quiet=True)
    assert cfg.data.image_size == 256 and list(cfg.anchors.sizes) == [16, 32, 64, 128, 256]  # plain values win


def test_scale_crop_takes_a_window_at_the_training_scale_with_its_instances():
    torch.manual_seed(0)
    masks = np.zeros((2, 300, 200), np.uint8)
    masks[0, 10:20, 10:20] = 1
    masks[1, 250:290, 150:190] = 1
    target = make_target(masks, [1, 2], 7)
    image = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    for _ in range(20):
        out, t = ScaleCrop(600, 128)(image, target)  # x2: 400x600 scaled, 128 px windows
        assert out.shape == (128, 128, 3) and t["masks"].shape[1:] == (128, 128)
        assert len(t["labels"]) <= 2 and all(20 <= a <= 6400 for a in t["area"].tolist())
        assert torch.equal(
            t["boxes"], torch.from_numpy(np.asarray([_box(m) for m in t["masks"].numpy()], np.float32)).reshape(-1, 4)
        )
    hits = sum(len(ScaleCrop(600, 128, on_instance=1.0)(image, target)[1]["labels"]) > 0 for _ in range(20))
    assert hits == 20  # centred on an instance: never an empty window


def _box(m):
    ys, xs = np.nonzero(m)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_data_without_statistics_keeps_the_fixed_defaults():
    cfg, fit = auto.resolve(compose_cfg([], tiny=False), quiet=True)  # shapes: the main job
    assert cfg.max_gt_instances == 100 and cfg.rois_per_image == 32 and cfg.nms.box_detections_per_img == 100
    assert cfg.trainer.check_val_every_n_epoch == 1 and cfg.data.image_size == 128 and not fit.advice


def test_epochs_auto_without_a_budget_is_one_line(tmp_path):
    stats = stats_of({"train": dense(4, 2, 40)})
    with pytest.raises(MasklabError, match="schedule.epochs=auto needs a budget in optimizer steps"):
        auto.resolve(prepared_cfg(tmp_path, "data.steps=null"), stats, quiet=True)


@pytest.mark.slow
@pytest.mark.parametrize("n_images", [6, 60])
def test_a_budget_of_n_steps_trains_n_steps_whatever_the_dataset_size(tmp_path, n_images):
    from masklab import training as train_cli

    images = [(48, 64, [(8 + i % 5, 8, 10, 12, i % 2)]) for i in range(n_images)]
    prepare_coco(tmp_path, images, "data.prepare.split={train:1.0,val:0}")
    (tmp_path / "prepared" / "annotations" / "val.json").write_text(
        (tmp_path / "prepared" / "annotations" / "train.json").read_text()
    )  # score on train: only the count matters
    overrides = [o for o in TINY_MODEL if not o.startswith(("data.image_size", "schedule.epochs", "logger"))]
    cfg = compose_cfg(
        [
            "data=prepared",
            "data.name=x",
            f"data.root={tmp_path / 'prepared'}",
            "data.steps=7",
            "backbone=mobilenet_v3",
            *overrides,
            f"paths.output_root={tmp_path / 'out'}",
            f"paths.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        ],
        tiny=False,
    )
    train_cli.train(cfg, tmp_path / "run")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.tags["data_digest"] == digest(tmp_path / "prepared")  # which prepared data the run trained on
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 7
    per_epoch = -(-n_images // 2)  # batch_size 2
    assert ckpt["epoch"] == -(-7 // per_epoch) - 1
    assert OmegaConf.create(ckpt["hyper_parameters"]["cfg"]).schedule.epochs == -(-7 // per_epoch)
    with open(tmp_path / "run" / "history.csv") as f:  # the budget's last step is validated, mid-epoch or not
        assert int(list(csv.DictReader(f))[-1]["epoch"]) == ckpt["epoch"]


def test_the_default_sweep_of_prepared_data_searches_around_the_derived_values(tmp_path):
    from masklab.sweep.space import parse

    cfg = prepared_cfg(tmp_path)
    dists, _ = parse(OmegaConf.to_container(cfg.hparams_search, resolve=True), {}, [])
    assert dists["anchors.scale"].choices == (0.71, 1.0, 1.41) and dists["data.auto.scale"].choices == (0.75, 1.0, 1.25)
    assert "schedule.steps" not in dists  # one budget for every trial: asha pauses them at the same epochs
    stats = stats_of({"train": dense(4, 30, 8, side=700)})
    base, _ = auto.resolve(cfg, stats, quiet=True)
    scaled, _ = auto.resolve(prepared_cfg(tmp_path, "data.auto.scale=1.25", "anchors.scale=1.41"), stats, quiet=True)
    assert scaled.data.image_size >= 1.2 * base.data.image_size
    assert scaled.anchors.sizes[0] == round(
        1.41 * auto.fit_anchors(stats_boxes_at(stats, scaled.data.image_size))[0][0]
    )


def stats_boxes_at(stats, size):
    from masklab.data.stats import boxes_of

    b = boxes_of(stats)
    return b[:, :2] * auto.scale_of(b[:, 2:], size)[:, None]


@pytest.mark.slow
def test_a_sweep_of_prepared_data_with_the_default_pruner_trains_the_budget_in_steps(tmp_path):
    """The default space of prepared data and asha (the default pruner) over epochs derived from data.steps: of 3
    configurations paused at epoch 2, the best one resumes to the end of the budget."""
    import subprocess
    import sys

    import optuna

    from conftest import ROOT, make_tiny_prepared
    from masklab.sweep.storage import open_storage

    root = make_tiny_prepared(tmp_path, n=4)  # 2 train images: 1 step of batch 2 per epoch
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "-m",
        "hydra/sweeper=optuna",
        "data=prepared",
        "data.name=x",
        f"data.root={root}",
        "data.steps=4",
        *[o for o in TINY_MODEL if not o.startswith(("schedule.", "data.image_size", "logger="))],
        "logger=none",
        "experiment_name=p",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.pruner_kwargs={min_resource:2}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="p", storage=open_storage(f"journal:{tmp_path}/multirun/p/p/optuna.journal"))
    assert {"anchors.scale", "data.auto.scale"} <= set(study.trials[0].params)
    assert study.user_attrs["masklab_pruner"]["spec"]["_target_"] == "masklab.sweep.asha.Asha"
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done
    ckpts = list((tmp_path / "multirun" / "p" / "p").glob("*/checkpoints/last.ckpt"))
    steps = {torch.load(c, weights_only=False, map_location="cpu")["global_step"] for c in ckpts}
    assert 4 in steps and max(steps) == 4  # a configuration run to its end trains the budget; no one trains more
    # the study keeps its data's digest: a copy of that data goes on; other data (prepared again, another
    # machine's stale copy) is refused with one line before any trial, as its results would not compare
    assert study.user_attrs["masklab_data"]["digest"] == digest(root)
    shutil.copytree(root, tmp_path / "copy")
    again = subprocess.run([*cmd, f"data.root={tmp_path / 'copy'}"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already has its n_trials=3 trials: none run" in again.stdout + again.stderr
    other = make_tiny_prepared(tmp_path / "other", n=6)
    refused = subprocess.run([*cmd, f"data.root={other}"], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert (
        f"error: study 'p' trains on other data: {other} here (annotations {digest(other)}) is not the study's ("
        in (refused.stderr)
    )
    assert len(
        optuna.load_study(
            study_name="p", storage=open_storage(f"journal:{tmp_path}/multirun/p/p/optuna.journal")
        ).trials
    ) == len(study.trials)
