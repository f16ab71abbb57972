#!/usr/bin/env python
"""How many training epochs pruning saves: the same Optuna study with and without the pruner.

Both studies run through the real sweeper (``python src/train.py -m hydra/sweeper=optuna``) on
shapes with the same space, sampler and sampler seed; only ``hydra.sweeper.pruner`` differs. For
each study: trials in order, epochs each trained (validation epochs reported to Optuna), and the
total epochs spent until the best segm AP so far is within ``--tol`` of that study's final best.

    python benchmarks/pruning.py                      # 8 trials x 5 epochs: ~25 min on 2 cores
    python benchmarks/pruning.py --trials 20 --epochs 8

Trials start from the ImageNet MobileNetV2 in ../shared/weights when it is there (from scratch a few
epochs of shapes learn too little for the curves to tell trials apart), with gradient clipping; the
learning rate spans 1e-4 (learns slowly: the pruner's target) to 5e-2 (diverges: FAIL).
Target: epochs(pruned) / epochs(unpruned) <= 0.5.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import optuna  # noqa: E402

from masklab.sweep.study import open_storage  # noqa: E402


def backbone() -> list[str]:
    weights = ROOT.parent / "shared" / "weights" / "mobilenet_v2_imagenet_features.pth"
    return ["backbone=mobilenet_v2", f"backbone.weights={weights}"] if weights.is_file() else []


def run_study(work: Path, name: str, pruner: str, args) -> tuple[list, float]:
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), "-m", "hydra/sweeper=optuna", f"paths.root_dir={work}",
           f"experiment_name={name}", "logger=none", "hparams_search=none", f"hydra.sweeper.pruner={pruner}",
           f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.seed={args.seed}", "hydra.sweeper.sampler=tpe",
           "hydra.sweeper.sampler_kwargs={n_startup_trials:4}",
           "optimizer.lr=tag(log,interval(0.0001,0.05))", "schedule.warmup_iters=20", "grad_clip_norm=5",
           "anchors=choice(tiny,small)", f"schedule.epochs={args.epochs}", f"data.train.num_images={args.images}",
           "data.val.num_images=50", "num_workers=0", "+trainer.enable_progress_bar=false", *backbone()]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        sys.exit(f"study {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    storage = open_storage(f"journal:{work}/multirun/{name}/{name}/optuna.journal")
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    return sorted(trials, key=lambda t: t.number), time.perf_counter() - start


def epochs_to_best(trials, tol: float) -> tuple[int, float, int]:
    """(epochs spent until best-so-far >= final best - tol, final best, total epochs)."""
    def value(t):
        return max(t.intermediate_values.values()) if t.intermediate_values else float("-inf")

    final = max(value(t) for t in trials)
    spent, reached = 0, None
    for t in trials:
        spent += len(t.intermediate_values)
        if reached is None and value(t) >= final - tol:
            reached = spent
    return reached, final, spent


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--images", type=int, default=160, help="shapes training images per epoch")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (the same for both studies)")
    p.add_argument("--tol", type=float, default=0.01)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="masklab-pruning-"))
    try:
        rows = {}
        for label, pruner in (("no pruning", "none"), ("median pruner", "median")):
            trials, seconds = run_study(work, pruner, pruner, args)
            reached, final, total = epochs_to_best(trials, args.tol)
            rows[label] = {"epochs_to_best": reached, "best_segm_AP": final, "total_epochs": total, "minutes": seconds / 60,
                           "pruned": sum(t.state.name == "PRUNED" for t in trials)}
            print(f"{label:14s} best segm AP {final:.4f}  epochs to within {args.tol} of it: {reached:3d}  "
                  f"total epochs {total:3d}  pruned {rows[label]['pruned']:2d}  ({seconds / 60:.1f} min)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = rows["median pruner"]["epochs_to_best"] / rows["no pruning"]["epochs_to_best"]
    total_ratio = rows["median pruner"]["total_epochs"] / rows["no pruning"]["total_epochs"]
    print(f"\n{args.trials} trials x {args.epochs} epochs, TPE seed {args.seed}, this machine:\n"
          f"  epochs to best (pruned / unpruned)  {ratio:.2f}   (target <= 0.5)\n"
          f"  total epochs   (pruned / unpruned)  {total_ratio:.2f}")
    return {"rows": rows, "ratio": ratio, "total_ratio": total_ratio}


if __name__ == "__main__":
    main()
