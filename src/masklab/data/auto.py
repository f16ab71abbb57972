"""``auto`` settings: the training scale, anchors, instance caps and budget derived from a dataset's statistics.

``prepare.py`` stores the statistics (:mod:`masklab.data.stats`) in ``report.json``; :func:`resolve` reads
them when a run starts and replaces every config value ``auto`` by a derived one, each with its reason.
A plain value overrides ``auto``; one that does not fit the data (anchors that miss objects, a cap below the
densest image) gets a sentence saying what it costs and what to set. Data without statistics (the built-in
shapes) gets :data:`FALLBACK`, the fixed defaults of before.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from masklab import MasklabError
from masklab.data.stats import boxes_of

log = logging.getLogger("masklab.auto")

AUTO = "auto"
#: FPN feature strides of every masklab backbone (P2..P6): one anchor size per map
STRIDES = (4, 8, 16, 32, 64)
#: values of ``auto`` keys where the data has no statistics (generated shapes): the fixed defaults
FALLBACK = {
    "max_gt_instances": 100,
    "rois_per_image": 32,
    "nms.box_detections_per_img": 100,
    "model.rpn_pre_nms_top_n_train": 500,
    "model.rpn_post_nms_top_n_train": 500,
    "model.rpn_pre_nms_top_n_test": 500,
    "model.rpn_post_nms_top_n_test": 500,
    "trainer.check_val_every_n_epoch": 1,
    "data.crop_size": None,
    "data.image_size": 512,
    "anchors.sizes": [32, 64, 128, 256, 512],
    "anchors.aspect_ratios": [0.5, 1.0, 2.0],
}
#: the anchors group's fixed options, compared with ``auto`` in the report
GROUPS = {"default": [32, 64, 128, 256, 512], "small": [16, 32, 64, 128, 256], "tiny": [8, 16, 32, 64, 128]}


# ---- anchors --------------------------------------------------------------------------------------------
def anchor_shapes(sizes, ratios) -> np.ndarray:
    """(K, 2) anchor widths and heights as torchvision's AnchorGenerator makes them (ratio = h / w, rounded
    half-extents)."""
    out = []
    for s in sizes:
        for r in ratios:
            h_ratio = math.sqrt(r)
            w, h = s / h_ratio, s * h_ratio
            out.append((2 * round(w / 2), 2 * round(h / 2)))
    return np.maximum(np.asarray(out, float), 1.0)


def best_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Per box (N×2 w, h) the best IoU with any anchor (K×2), both centred at one point (shape fit, as
    ultralytics' best possible recall)."""
    if len(wh) == 0:
        return np.zeros(0)
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None] - inter
    return (inter / union).max(1)


def anchor_recall(wh: np.ndarray, sizes, ratios, iou: float = 0.5) -> float:
    """Share of boxes (N×2 w, h at training scale) whose best anchor has IoU >= ``iou``."""
    return float((best_iou(wh, anchor_shapes(sizes, ratios)) >= iou).mean()) if len(wh) else float("nan")


def fit_anchors(wh: np.ndarray, iou: float = 0.5) -> tuple[list[int], list[float], float]:
    """(sizes, aspect ratios, recall): one size per FPN level, doubling level to level like the strides, the
    smallest searched over 4-128 px in steps of 2^(1/8); ratios torchvision's (0.5, 1, 2) or the data's
    10/50/90 % aspect ratios. Ranked by recall (to 0.001), then by the smallest size nearest torchvision's 32 px
    (8x the finest stride): smaller anchors put the objects on coarser maps, with fewer anchors per object."""
    aspects = wh[:, 1] / wh[:, 0]
    quant = [round(float(np.exp(np.percentile(np.log(aspects), q))), 2) for q in (10, 50, 90)] if len(wh) else []
    ratio_sets = [[0.5, 1.0, 2.0]] + ([quant] if len(set(quant)) == 3 else [])
    best = None
    for ratios in ratio_sets:
        for k in range(41):
            base = 4 * 2 ** (k / 8)
            sizes = [int(round(base * 2**i)) for i in range(len(STRIDES))]
            recall = float((best_iou(wh, anchor_shapes(sizes, ratios)) >= iou).mean())
            score = (round(recall, 3), -abs(math.log2(base / 32)))
            if best is None or score > best[0]:
                best = (score, sizes, ratios, recall)
    _, sizes, ratios, recall = best
    return sizes, [float(r) for r in ratios], recall


# ---- the training scale ---------------------------------------------------------------------------------
def scale_of(hw: np.ndarray, image_size: float) -> np.ndarray:
    """torchvision's resize factor with image_min_size = image_max_size = ``image_size``: long side to it."""
    return image_size / np.maximum(hw[:, 0], hw[:, 1])


def choose_size(boxes: np.ndarray, long_side: float, opts) -> tuple[int, str]:
    """(image_size, reason): native resolution up to ``max_train_size``, larger where the
    10th-percentile object needs it to reach ``min_object_px``; past ``max_train_size`` training takes random
    crops of that size at the full scale (tiles) and prediction runs on the whole image."""
    sizes = np.sqrt(boxes[:, 0] * boxes[:, 1])
    p10 = float(np.percentile(sizes, 10))
    need = long_side * opts.min_object_px / p10 * float(opts.get("scale", 1.0))
    size = max(need, min(long_side, opts.max_train_size) * float(opts.get("scale", 1.0)))
    why = (
        f"the 10 % smallest objects are <= {p10:.1f} px at native size ({long_side:.0f} px long side, median): "
        f"at {math.ceil(size / 32) * 32} px they are >= {opts.min_object_px * size / need:.0f} px"
    )
    if size > opts.max_image_size:
        size = opts.max_image_size
        why += f" (capped at data.auto.max_image_size={opts.max_image_size})"
    size = int(math.ceil(size / 32) * 32)
    if size > opts.max_train_size * 1.15:
        why += (
            f"; larger than data.auto.max_train_size={opts.max_train_size}, so training takes "
            f"{opts.get('crop_size') or opts.max_train_size} px crops at that scale (tiles) and prediction runs on "
            "whole images"
        )
    return size, why


# ---- resolving a config ---------------------------------------------------------------------------------
@dataclass
class Fit:
    """What :func:`resolve` decided: ``values`` {key: value}, ``reasons`` {key: why}, ``advice`` sentences,
    ``numbers`` (anchor recall, instances per image, ...) for report.json, the run's MLflow metrics and tests."""

    values: dict = field(default_factory=dict)
    reasons: dict = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def set(self, key: str, value, why: str) -> None:
        self.values[key], self.reasons[key] = value, why

    def lines(self) -> list[str]:
        return [f"{k}={_show(v)}: {self.reasons[k]}" for k, v in self.values.items()]


def _show(v) -> str:
    return "null" if v is None else str(v)


def load_stats(cfg: DictConfig) -> dict | None:
    """The statistics ``prepare.py`` stored for the run's prepared data, or None (generated data)."""
    root = OmegaConf.select(cfg, "data.root", default=None)
    if not root or OmegaConf.select(cfg, "data._target_", default="") != "masklab.data.datamodule.from_prepared":
        return None
    path = Path(root) / "report.json"
    if not path.is_file():
        return None
    stats = json.loads(path.read_text()).get("stats")
    if stats is None:
        raise MasklabError(
            f"{path}: written by an older masklab without dataset statistics, which the auto settings "
            f"need: prepare it again (python src/prepare.py data=<its option>) or set plain values"
        )
    return stats


def resolve(cfg: DictConfig, stats: dict | None = None, quiet: bool = False) -> tuple[DictConfig, Fit]:
    """A copy of ``cfg`` with every ``auto`` replaced, and the :class:`Fit` saying why (``stats``: default the
    prepared data's)."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    stats = load_stats(cfg) if stats is None else stats
    fit = Fit()
    if stats:
        _fit_data(cfg, stats, fit)
    for key, value in fit.values.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    _budget(cfg, stats, fit)
    for key, value in FALLBACK.items():
        if _is_auto(cfg, key):
            fit.set(
                key, value, "nothing to derive it from (no prepared statistics, or no steps budget): the fixed default"
            )
            OmegaConf.update(cfg, key, value, force_add=True)
    if stats:
        fit.advice += check_caps(cfg, stats, fit.numbers)
    if not quiet:
        for line in fit.lines():
            log.info("auto: %s", line)
        if "anchor_recall" in fit.numbers:
            n = fit.numbers
            groups = ", ".join(f"{g} {r:.3f}" for g, r in n["anchor_recall_groups"].items())
            log.info(
                "anchor recall (train boxes whose best anchor has IoU >= %s): %.3f with anchors %s; auto %.3f; %s",
                n["anchor_iou"],
                n["anchor_recall"],
                n["anchor_sizes"],
                n["anchor_recall_auto"],
                groups,
            )
        for sentence in fit.advice:
            log.warning("%s", sentence)
    return cfg, fit


def resolved(cfg: DictConfig) -> DictConfig:
    """``cfg`` with its ``auto`` values resolved (quietly), or ``cfg`` itself when it has none: for code that builds
    a model or data from a composed config outside train.py (benchmarks, tests, recipes)."""
    return resolve(cfg, quiet=True)[0] if _has_auto(OmegaConf.to_container(cfg, resolve=False)) else cfg


def _has_auto(node) -> bool:
    if isinstance(node, dict):
        return any(_has_auto(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_auto(v) for v in node)
    return node == AUTO


def _is_auto(cfg: DictConfig, key: str) -> bool:
    return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False) == AUTO


def _fit_data(cfg: DictConfig, stats: dict, fit: Fit) -> None:
    boxes = boxes_of(stats, "train")
    if len(boxes) == 0:
        raise MasklabError(
            f"{cfg.data.root}: the train split has no instances: nothing to learn (report.md lists what was dropped)"
        )
    opts = cfg.data.get("auto") or OmegaConf.create(
        {"min_object_px": 10, "max_train_size": 384, "max_image_size": 2048}
    )
    long_side = float(stats["train"]["image_long_side"]["median"])
    if _is_auto(cfg, "data.image_size"):
        size, why = choose_size(boxes, long_side, opts)
        fit.set("data.image_size", size, why)
    size = fit.values.get("data.image_size", cfg.data.image_size)
    if _is_auto(cfg, "data.crop_size"):
        crop = int(opts.get("crop_size") or opts.max_train_size) if size > opts.max_train_size * 1.15 else None
        fit.set(
            "data.crop_size",
            crop,
            f"tiles: data.image_size={size} is over data.auto.max_train_size={opts.max_train_size}"
            if crop
            else "whole images fit the compute cap",
        )
    crop = fit.values.get("data.crop_size", OmegaConf.select(cfg, "data.crop_size", default=None))
    wh = boxes[:, :2] * scale_of(boxes[:, 2:], size)[:, None]
    _fit_anchors(cfg, wh, opts, fit)
    _fit_caps(cfg, stats, size, crop, fit)
    fit.advice += split_advice(stats, size, fit.numbers)


def _fit_anchors(cfg: DictConfig, wh: np.ndarray, opts, fit: Fit) -> None:
    iou = float(opts.get("anchor_iou", 0.5))
    sizes, ratios, recall = fit_anchors(wh, iou)
    scale = float(OmegaConf.select(cfg, "anchors.scale", default=1.0) or 1.0)
    if _is_auto(cfg, "anchors.sizes"):
        sizes = [max(2, int(round(s * scale))) for s in sizes]
        scaled = f", x{scale} (anchors.scale)" if scale != 1 else ""
        fit.set(
            "anchors.sizes",
            sizes,
            f"fitted to the train boxes at the training scale: recall {recall:.3f} (IoU >= {iou}; of equal "
            f"recall, the nearest torchvision's 32 px on the stride-4 map){scaled}",
        )
    if _is_auto(cfg, "anchors.aspect_ratios"):
        fit.set("anchors.aspect_ratios", ratios, "the better of torchvision's and the data's 10/50/90 % aspect ratios")
    used_sizes = fit.values.get("anchors.sizes", list(cfg.anchors.sizes))
    used_ratios = fit.values.get("anchors.aspect_ratios", list(cfg.anchors.aspect_ratios))
    used = anchor_recall(wh, used_sizes, used_ratios, iou)
    per_group = {g: round(anchor_recall(wh, s, [0.5, 1.0, 2.0], iou), 4) for g, s in GROUPS.items()}
    below = float((np.sqrt(wh[:, 0] * wh[:, 1]) < min(used_sizes) / 2).mean())
    fit.numbers.update(
        anchor_recall=round(used, 4),
        anchor_recall_auto=round(recall, 4),
        anchor_recall_groups=per_group,
        anchor_iou=iou,
        below_half_smallest_anchor=round(below, 4),
        anchor_sizes=used_sizes,
        box_size_train_px=_q(np.sqrt(wh[:, 0] * wh[:, 1])),
    )
    if used < 0.95 and used < recall - 0.02:
        fit.advice.append(
            f"anchors {used_sizes} reach only {used:.0%} of the training boxes (best anchor IoU >= {iou}; "
            f"{below:.0%} are below half the smallest anchor): anchors=auto reaches {recall:.0%}"
        )


def _q(v) -> dict:
    return (
        {k: round(float(x), 1) for k, x in zip(("p10", "median", "p90"), np.percentile(v, [10, 50, 90]))}
        if len(v)
        else {}
    )


def _per_sample(stats: dict, size: int, crop: int | None) -> tuple[float, float]:
    """(max, p95) instances in one training sample: a whole image, or what a crop holds of one at the training
    scale (twice its share of the image's area: objects cluster)."""
    tr = stats["train"]
    counts = np.asarray(tr.get("instance_counts") or [tr["instances_per_image"].get("max", 0)], float)
    if crop:
        s = size / tr["image_long_side"]["median"]
        share = min(1.0, 2 * crop * crop / (tr["image_height"]["median"] * tr["image_width"]["median"] * s * s))
        counts = np.ceil(counts * share)
    return float(counts.max()), float(np.percentile(counts, 95))


def _fit_caps(cfg: DictConfig, stats: dict, size: int, crop, fit: Fit) -> None:
    densest = int(max(s["instances_per_image"].get("max", 0) for s in stats.values() if s.get("images")))
    sample_max, sample_p95 = _per_sample(stats, size, crop)
    fit.numbers.update(max_instances_per_image=int(densest), max_instances_per_sample=int(sample_max))
    derived = {
        "max_gt_instances": (max(100, int(sample_max)), f"the densest training sample has {sample_max:.0f} instances"),
        "nms.box_detections_per_img": (
            max(100, _round_up(densest * 1.5, 10)),
            f"the densest image has {densest} instances (x1.5)",
        ),
        "rois_per_image": (
            max(32, min(512, _round_up(4 * sample_p95, 32))),
            f"4x the 95th-percentile training sample ({sample_p95:.0f} instances), 25 % of them positive",
        ),
    }
    for phase, n in (("train", sample_max), ("test", densest)):
        need = max(500, _round_up(4 * n, 100))
        for kind in ("pre", "post"):
            derived[f"model.rpn_{kind}_nms_top_n_{phase}"] = (
                need,
                f"4x the densest {phase} sample's {n:.0f} instances",
            )
    for key, (value, why) in derived.items():
        if _is_auto(cfg, key):
            fit.set(key, value, why)


def _round_up(x: float, step: int) -> int:
    return int(math.ceil(x / step) * step)


def check_caps(cfg: DictConfig, stats: dict, numbers: dict) -> list[str]:
    """Sentences for caps set by hand below what the data needs, with the instances they lose."""
    out = []
    train = stats.get("train", {})
    counts = np.asarray(train.get("instance_counts", []), int)
    cap = int(cfg.max_gt_instances)
    lost = int(np.maximum(counts - cap, 0).sum()) if len(counts) else 0
    if lost and not cfg.data.get("crop_size"):
        out.append(
            f"max_gt_instances={cap} drops the {lost} smallest ground-truth instances of {int((counts > cap).sum())} "
            f"training images at every step: set max_gt_instances=auto (or >= {counts.max()})"
        )
    dets = int(cfg.nms.box_detections_per_img)
    for split, s in stats.items():
        c = np.asarray(s.get("instance_counts", []), int)
        missed = int(np.maximum(c - dets, 0).sum()) if split != "train" and len(c) else 0
        if missed:
            out.append(
                f"nms.box_detections_per_img={dets}: {split} has {int((c > dets).sum())} images with more objects, "
                f"so at least {missed} can never be found (AP and recall capped): set it to auto (or >= {c.max()})"
            )
    numbers["caps"] = {"max_gt_instances": cap, "box_detections_per_img": dets}
    return out


SMALL_PX = 8  # px at training scale under which an object is "tiny" (2 cells of the stride-4 map)


def split_advice(stats: dict, size: int, numbers: dict) -> list[str]:
    """Sentences for splits without instances, classes missing from a split, and splits whose objects differ in
    scale from train's at ``size`` (``numbers`` gets each split's share of tiny objects and median size)."""
    out, train = [], stats.get("train", {})
    taught = [c for c, n in train.get("instances_per_class", {}).items() if n]
    shares = {}
    for split, s in stats.items():
        if s.get("images") and not s["instances_per_image"].get("total"):
            out.append(
                f"the {split} split has {s['images']} images and no instances: nothing to score there; "
                f"report.md lists what was dropped (or give data.prepare.split another {split} share/seed)"
            )
            continue
        lost = [c for c in taught if not s.get("instances_per_class", {}).get(c)]
        if split != "train" and lost:
            out.append(
                f"class{'es' if len(lost) > 1 else ''} {', '.join(lost)} {'have' if len(lost) > 1 else 'has'} no "
                f"instance in the {split} split: {'their' if len(lost) > 1 else 'its'} AP there is not measured; "
                f"change data.prepare.seed or the split shares"
            )
        b = boxes_of(stats, split)
        if len(b):
            px = np.sqrt(b[:, 0] * b[:, 1]) * scale_of(b[:, 2:], size)
            shares[split] = (float((px < SMALL_PX).mean()), float(np.median(px)))
    numbers["tiny_share"] = {k: round(v[0], 4) for k, v in shares.items()}
    numbers["median_box_px"] = {k: round(v[1], 1) for k, v in shares.items()}
    if "train" in shares:
        (t_small, t_med) = shares["train"]
        for split, (small, med) in shares.items():
            if split != "train" and (abs(small - t_small) > 0.2 or not 2 / 3 <= med / t_med <= 3 / 2):
                out.append(
                    f"train and {split} differ in object scale: at {size} px {t_small:.0%} of train instances but "
                    f"{small:.0%} of {split} are under {SMALL_PX} px (median {t_med:.0f} vs {med:.0f} px); "
                    f"{split} scores a different problem: resplit (data.prepare.seed) or gather {split} images "
                    "like the training ones"
                )
    return out


# ---- the budget ---------------------------------------------------------------------------------------
def _budget(cfg: DictConfig, stats: dict | None, fit: Fit) -> None:
    """``schedule.epochs=auto``: the epochs that hold ``schedule.steps`` optimizer steps; warmup and validation
    cadence follow the length."""
    sched = cfg.get("schedule")
    if sched is None:  # a partial config (a model alone)
        return
    steps = sched.get("steps")
    if _is_auto(cfg, "schedule.epochs"):
        if not steps:
            raise MasklabError(
                "schedule.epochs=auto needs a budget in optimizer steps: give schedule.steps=<N> "
                "(or a plain schedule.epochs)"
            )
        images = _train_images(cfg, stats)
        if images is None:  # no prepared data yet: the datamodule says so in one line
            return
        per_epoch = max(1, math.ceil(images / int(cfg.batch_size)))
        epochs = max(1, math.ceil(steps / per_epoch))
        OmegaConf.update(cfg, "schedule.epochs", epochs)
        fit.set(
            "schedule.epochs",
            epochs,
            f"schedule.steps={steps} optimizer steps of {per_epoch} per epoch "
            f"({images} training images, batch_size {cfg.batch_size})",
        )
        if OmegaConf.select(cfg, "sweep.stop_epoch", default=None) is not None or cfg.get("resume"):
            # asha's pause and resume (and any resume) go by epochs: Lightning resumed a max_steps run a step short
            OmegaConf.update(cfg, "schedule.steps", None)
            fit.set("schedule.steps", None, f"paused or resumed runs train whole epochs: {epochs} x {per_epoch} steps")
    elif steps:
        OmegaConf.update(cfg, "schedule.steps", None)
        fit.set("schedule.steps", None, f"schedule.epochs={sched.epochs} was given: it sets the length")
    if cfg.schedule.get("steps") and sched.warmup_iters > cfg.schedule.steps // 5:
        warm = max(1, cfg.schedule.steps // 10)
        OmegaConf.update(cfg, "schedule.warmup_iters", warm)
        fit.set("schedule.warmup_iters", warm, f"a tenth of the {cfg.schedule.steps} steps")
    if _is_auto(cfg, "trainer.check_val_every_n_epoch") and cfg.schedule.get("steps"):
        every = max(1, round(cfg.schedule.epochs / 5))
        OmegaConf.update(cfg, "trainer.check_val_every_n_epoch", every)
        fit.set("trainer.check_val_every_n_epoch", every, f"about 5 validations in {cfg.schedule.epochs} epochs")


def _train_images(cfg: DictConfig, stats: dict | None) -> int | None:
    """Training images per epoch: the prepared train split (without empty images when data.drop_empty)."""
    if stats:
        tr = stats["train"]
        counts = tr.get("instance_counts")
        if counts is not None and cfg.data.get("drop_empty", True):
            return sum(1 for c in counts if c > 0)
        return int(tr["images"])
    n = OmegaConf.select(cfg, "data.train.num_images", default=None)
    return None if n is None else int(n)
