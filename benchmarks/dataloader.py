#!/usr/bin/env python
"""Data pipeline speed vs what training consumes: is loading ever the bottleneck?

Loading: images/s of the training DataLoader (``augmentation=full``, ``num_workers=2`` by default:
read or generate, augment, cap, to tensor, collate) iterated alone. Training: images/s of forward +
backward + step of the same model on batches already in memory (so no loading is inside it), same
batch size and image size. Both in one process, one after the other, the first batches untimed.

    python benchmarks/dataloader.py                         # main-job config + augmentation=full
    python benchmarks/dataloader.py data=pennfudan          # real JPEGs (after prepare.py data=pennfudan)
Target: loading / training >= 3.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40, help="timed loader batches")
    parser.add_argument("--train-batches", type=int, default=10, help="timed training batches")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/config.yaml")
    return parser


if __name__ == "__main__":  # --help and a wrong argument answer before torch and Lightning are imported (5 s)
    arguments().parse_intermixed_args()


import lightning.pytorch as L  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from masklab.data.datamodule import build_datamodule  # noqa: E402
from masklab.model.module import build_module  # noqa: E402


def loading_rate(loader, batches: int, warmup: int) -> float:
    images, start = 0, None
    for i, (imgs, _) in enumerate(loader):
        if i == warmup:
            start = time.perf_counter()
        if i == warmup + batches:
            break
        images += len(imgs) if i >= warmup else 0
    return images / (time.perf_counter() - start)


def training_rate(cfg, class_names, batches_in_memory, warmup: int) -> float:
    L.seed_everything(cfg.seed, verbose=False)
    model = build_module(cfg, class_names=class_names).model.train()
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    images = 0
    for i, (imgs, targets) in enumerate(batches_in_memory):
        if i == warmup:
            start = time.perf_counter()
        loss = sum(model(list(imgs), list(targets)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        images += len(imgs) if i >= warmup else 0
    return images / (time.perf_counter() - start)


def main(argv=None) -> dict:
    args = arguments().parse_intermixed_args(argv)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", "augmentation=full", "num_workers=2", *args.overrides])
    dm = build_datamodule(cfg)
    load = loading_rate(dm.train_dataloader(), args.batches, args.warmup)
    in_memory = []
    for imgs, targets in dm._loader("train", shuffle=False):
        in_memory.append((imgs, targets))
        if len(in_memory) == args.train_batches + args.warmup:
            break
    train = training_rate(cfg, dm.class_names, in_memory, args.warmup)
    result = {"loading_img_s": load, "training_img_s": train, "ratio": load / train}
    print(
        f"\n{cfg.data.get('name', 'shapes')}, augmentation=full, {cfg.num_workers} workers, batch {cfg.batch_size}, "
        f"image {cfg.image_min_size}-{cfg.image_max_size} px, this machine:\n"
        f"  data pipeline   {load:8.1f} img/s\n  training        {train:8.2f} img/s\n"
        f"  ratio           {load / train:8.1f}x  (target >= 3)"
    )
    return result


if __name__ == "__main__":
    main()
