#!/usr/bin/env python
"""Transfer learning on real data: PennFudanPed, MobileNetV2 + FPN from ImageNet weights vs from scratch.

Both runs use the recipe ``experiments/pennfudan.yaml`` (the pretrained backbone comes through the
normal ``backbone.weights=<file>`` option); the scratch run only sets ``backbone.weights=null``.
Same data split (seeded), epochs, schedule and batch size. Reports bbox/segm AP and AP50 on the
held-out test split (best checkpoint by val segm AP) and the wall time; both runs are in MLflow
(experiment ``pennfudan``) with their loss and AP curves.

    python benchmarks/pennfudan.py                   # the recipe's 16 epochs at 384 px (~18 min each on 2 cores)
    python benchmarks/pennfudan.py --epochs 4        # a quick look
    python benchmarks/pennfudan.py trainer=gpu num_workers=8   # on a GPU machine (fp32; + trainer.precision=16-mixed)
    python benchmarks/pennfudan.py --only scratch trainer=gpu backbone=r50 model=standard   # one row only
Target: pretrained test segm AP50 >= 0.85 within 20 minutes on a 2-core CPU, clearly above scratch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from timed import run_exported

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
KEYS = ("test/segm_AP50", "test/segm_AP", "test/bbox_AP50", "test/bbox_AP", "val/segm_AP50")


def run(label: str, overrides: list[str], out: Path) -> dict:
    metrics = out / f"{label}.json"
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "run.py"),
        "pennfudan",
        f"run_name=pennfudan-{label}",
        f"export.metrics={metrics}",
        "+trainer.enable_progress_bar=false",
        *overrides,
    ]
    minutes, result = run_exported(label, cmd, metrics)
    return {"minutes": minutes, **{k: result.get(k) for k in KEYS}}


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (both runs)")
    p.add_argument(
        "--only",
        choices=("pretrained", "scratch"),
        default=None,
        help="run only one of the two (default both); scratch adds backbone.weights=null",
    )
    p.add_argument("--out", default=str(ROOT / "outputs" / "pennfudan_study"))
    p.add_argument("overrides", nargs="*", help="Hydra overrides for both runs")
    args = p.parse_intermixed_args(argv)
    if not (SHARED / "data" / "PennFudanPed").is_dir() or not (SHARED / "weights").is_dir():
        print(f"skipped: {SHARED}/data/PennFudanPed or {SHARED}/weights not present")
        return {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [*(f"schedule.epochs={args.epochs}",) * (args.epochs is not None), *args.overrides]
    runs = {"pretrained": ("pretrained (ImageNet)", common), "scratch": ("scratch", ["backbone.weights=null", *common])}
    rows = {runs[r][0]: run(r, runs[r][1], out) for r in ([args.only] if args.only else runs)}
    device = _device()
    print(f"\nPennFudanPed test split, this machine ({device}):")
    print(f"{'':24s}" + "".join(f"{k:>16s}" for k in (*KEYS, "minutes")))
    for label, r in rows.items():
        print(
            f"{label:24s}"
            + "".join(f"{(r[k] if r[k] is not None else float('nan')):16.4f}" for k in (*KEYS, "minutes"))
        )
    (out / "results.json").write_text(json.dumps({**rows, "_run": {"device": device, "overrides": common}}, indent=1))
    return rows


if __name__ == "__main__":
    main()
