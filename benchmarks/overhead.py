#!/usr/bin/env python
"""Framework overhead: training images/s of masklab's LightningModule vs a bare torchvision loop.

Both train the same model (built by masklab's one ``build_model`` from the same config) on the same
data loader with the same batch size, optimizer and LR schedule. The bare loop is the one of
torchvision's detection references (``train_one_epoch``: forward, sum of losses, zero_grad,
backward, step, scheduler step). Runs alternate (L, bare, L, bare, ...) in one process so that
both see the same machine state; the first ``--warmup`` batches of every run are not timed.

    python benchmarks/overhead.py               # default: main-job config, 30 timed batches x 3 rounds
    python benchmarks/overhead.py backbone=r50  # any Hydra override of conf/
Target: ratio (Lightning / bare) >= 0.97.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches at the start of each run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating Lightning/bare rounds (median taken)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/config.yaml")
    return parser


if __name__ == "__main__":  # --help and a wrong argument answer before torch and Lightning are imported (5 s)
    arguments().parse_intermixed_args()


import lightning.pytorch as L  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from masklab.data.datamodule import build_datamodule  # noqa: E402
from masklab.model.module import build_module  # noqa: E402


class _Clock(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.images = warmup, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()
        if batch_idx >= self.warmup:
            self.images += len(batch[0])

    def on_train_end(self, trainer, pl_module):
        if pl_module.device.type == "cuda":  # kernels still queued belong to the timed batches
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


def lightning_run(
    cfg, datamodule, batches: int, warmup: int, accelerator: str = "cpu", precision: str = "32-true"
) -> float:
    L.seed_everything(cfg.seed, verbose=False)
    module, clock = build_module(cfg, class_names=datamodule.class_names), _Clock(warmup)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        precision=precision,
        limit_train_batches=batches + warmup,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
        log_every_n_steps=10,
    )
    trainer.fit(module, datamodule=datamodule)
    return clock.images / clock.seconds


def bare_run(cfg, datamodule, batches: int, warmup: int) -> float:
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, class_names=datamodule.class_names)  # same network, same optimizer + schedule config
    model = module.model.train()
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    images = 0
    for i, (imgs, targets) in enumerate(datamodule.train_dataloader()):
        if i == warmup:
            start = time.perf_counter()
        if i == warmup + batches:
            break
        loss_dict = model(list(imgs), list(targets))
        losses = sum(loss_dict.values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
        scheduler.step()
        images += len(imgs) if i >= warmup else 0
    return images / (time.perf_counter() - start)


def main(argv=None) -> dict:
    args = arguments().parse_intermixed_args(argv)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", *args.overrides])
    datamodule = build_datamodule(cfg)
    light, bare = [], []
    for r in range(args.rounds):
        light.append(lightning_run(cfg, datamodule, args.batches, args.warmup))
        bare.append(bare_run(cfg, datamodule, args.batches, args.warmup))
        print(f"round {r + 1}: lightning {light[-1]:.2f} img/s, bare {bare[-1]:.2f} img/s", flush=True)
    result = {"lightning_img_s": statistics.median(light), "bare_img_s": statistics.median(bare)}
    result["ratio"] = result["lightning_img_s"] / result["bare_img_s"]
    print(
        f"\nbatch {cfg.batch_size}, {args.batches} timed batches x {args.rounds} rounds (median), this machine:\n"
        f"  LightningModule   {result['lightning_img_s']:7.2f} img/s\n"
        f"  bare torchvision  {result['bare_img_s']:7.2f} img/s\n"
        f"  ratio             {result['ratio']:7.3f}   (target >= 0.97)"
    )
    return result


if __name__ == "__main__":
    main()
