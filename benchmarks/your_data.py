#!/usr/bin/env python
"""Your data, out of the box: the settings derived from each dataset (``auto``) against today's fixed values.

For every dataset available it prepares the data as a user would (``prepare.py``), then trains the README's
"your data" command twice with the same budget of optimizer steps, batch, optimizer and pretrained backbone:

* ``auto``: the defaults of prepared data (scale, tiles, anchors, caps and epochs derived from the statistics);
* ``fixed``: the data-dependent values masklab had before they were derived (512 px whole images,
  anchors=default, max_gt_instances / detections 100, rois_per_image 32, model=small's proposals).

It prints anchor recall (share of train boxes whose best anchor has IoU >= 0.5 at the training scale), segm AP50
and AP on the held-out split (test where there is one, else val; the image count is printed), minutes and steps.

    python benchmarks/your_data.py                          # dense_small, pennfudan, balloon (../shared), shapes
    python benchmarks/your_data.py --only dense_small --settings auto
    python benchmarks/your_data.py --steps 40               # a quick look
    python benchmarks/your_data.py trainer=gpu backbone=r50 # extra overrides for every run (a GPU machine)

Datasets: ``dense_small`` (the synthetic dense, small-object proxy, 50 images of 512-768 px: 40 train, 10 val),
``pennfudan`` (170 images: 119 / 25 / 26), ``balloon`` (the 13 balloon_val images: 9 train / 4 val),
``shapes`` (the main job, no statistics: auto is the fixed defaults, one run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from timed import run_exported

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"
sys.path.insert(0, str(ROOT / "src"))

#: dataset -> (prepare.py overrides, what it needs under ../shared or None)
DATASETS = {
    "dense_small": (["data=dense_small"], None),
    "pennfudan": (["data=pennfudan"], SHARED / "data" / "PennFudanPed"),
    "balloon": (["data=balloon", "data.prepare.split={train:0.7,val:0.3,test:0}"], SHARED / "data" / "balloon_val"),
    "shapes": (None, None),
}
#: the data-dependent values of data=prepared before they were derived from the data
FIXED = [
    "data.image_size=512",
    "data.crop_size=null",
    "anchors=default",
    "max_gt_instances=100",
    "nms.box_detections_per_img=100",
    "rois_per_image=32",
    "model=small",
]


def prepare(name: str, out: Path) -> Path:
    root = out / "prepared" / name
    if not (root / "report.json").is_file():
        cmd = [
            sys.executable,
            str(ROOT / "src" / "prepare.py"),
            *DATASETS[name][0],
            f"data.root={root}",
            f"hydra.run.dir={out / 'logs' / ('prepare-' + name)}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"prepare {name} failed:\n{proc.stderr[-2000:]}")
    return root


def recall(overrides: list[str]) -> tuple[float, dict]:
    """Anchor recall and the resolved values of a run's config, as train.py will resolve it."""
    from hydra import compose, initialize_config_dir

    import masklab
    from masklab.data.auto import resolve

    with initialize_config_dir(str(masklab.CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    rcfg, fit = resolve(cfg, quiet=True)
    settings = {
        "image_size": rcfg.data.image_size,
        "crop_size": rcfg.data.get("crop_size"),
        "anchors": list(rcfg.anchors.sizes),
        "steps": rcfg.schedule.get("steps"),
        "epochs": rcfg.schedule.epochs,
    }
    return fit.numbers.get("anchor_recall", float("nan")), settings


def train(label: str, overrides: list[str], out: Path) -> dict:
    metrics = out / f"{label}.json"
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        f"run_name={label}",
        "experiment_name=your_data",
        f"export.metrics={metrics}",
        "+trainer.enable_progress_bar=false",
        f"hydra.run.dir={out / 'runs' / label}",
        *overrides,
    ]
    minutes, result = run_exported(label, cmd, metrics)
    split = "test" if any(k.startswith("test/") for k in result) else "val"
    return {
        "minutes": round(minutes, 2),
        "split": split,
        "segm_AP50": result.get(f"{split}/segm_AP50"),
        "segm_AP": result.get(f"{split}/segm_AP"),
        "bbox_AP50": result.get(f"{split}/bbox_AP50"),
    }


def held_out(root: Path | None, split: str) -> int | str:
    if root is None:
        return 100  # shapes' val split
    path = root / "annotations" / f"{split}.json"
    return len(json.loads(path.read_text())["images"]) if path.is_file() else "?"


def run_dataset(name: str, settings: list[str], steps: int | None, extra: list[str], out: Path) -> dict:
    rows = {}
    if DATASETS[name][0] is None:  # shapes: the main job, generated on the fly
        base = [*extra]
        settings = ["auto"]
        root = None
    else:
        root = prepare(name, out)
        weights = [f"backbone.weights={WEIGHTS}"] if WEIGHTS.is_file() else []
        base = [
            "data=prepared",
            f"data.name={name}",
            f"data.root={root}",
            "backbone=mobilenet_v2",
            *weights,
            *([f"data.steps={steps}"] if steps else []),
            *extra,
        ]
    for setting in settings:
        overrides = base + (FIXED if setting == "fixed" else [])
        r, resolved = recall(overrides)
        row = train(f"{name}-{setting}", overrides, out)
        row.update(anchor_recall=round(r, 4), images=held_out(root, row["split"]), **resolved)
        rows[setting] = row
    return rows


def table(results: dict) -> str:
    head = (
        f"{'dataset':12s} {'setting':8s} {'recall':>7s} {'AP50':>7s} {'AP':>7s} {'split':>10s} {'min':>6s} "
        f"{'steps':>6s}  size/crop, anchors"
    )
    lines = [head]
    for name, rows in results.items():
        for setting, r in rows.items():
            fmt = lambda v: f"{v:7.3f}" if isinstance(v, (int, float)) and v == v else "    nan"  # noqa: E731
            lines.append(
                f"{name:12s} {setting:8s} {fmt(r['anchor_recall'])} {fmt(r['segm_AP50'])} {fmt(r['segm_AP'])} "
                f"{r['split'] + ' ' + str(r['images']):>10s} {r['minutes']:6.1f} {str(r['steps']):>6s}  "
                f"{r['image_size']}/{r['crop_size']}, {r['anchors']}"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(DATASETS), default=None, help="datasets (default: all available)")
    p.add_argument("--settings", nargs="+", choices=("auto", "fixed"), default=["auto", "fixed"])
    p.add_argument("--steps", type=int, default=None, help="budget in optimizer steps (default: prepared data's, 500)")
    p.add_argument("--out", default=str(ROOT / "outputs" / "your_data"))
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = p.parse_intermixed_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.only or list(DATASETS):
        needs = DATASETS[name][1]
        if needs is not None and not needs.exists():
            print(f"{name}: skipped, {needs} not present")
            continue
        results[name] = run_dataset(name, args.settings, args.steps, args.overrides, out)
        print(table({name: results[name]}), flush=True)
    print("\n" + table(results))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
