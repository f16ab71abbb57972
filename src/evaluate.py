#!/usr/bin/env python
"""Evaluate a checkpoint (``python src/evaluate.py --help``); the evaluation itself is :mod:`masklab.evaluation`,
imported after Hydra has answered ``--help``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, installed or not

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from masklab import EVALUATE_OOM_ADVICE, exit_on_error

log = logging.getLogger("masklab.evaluate")


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    with exit_on_error(log, EVALUATE_OOM_ADVICE):
        OmegaConf.select(cfg, "ckpt", throw_on_missing=True)  # left out: said before torch is imported
        from masklab.evaluation import evaluate  # torch (5 s): not imported for --help or a config error

        metrics = evaluate(cfg, out)
    width = max(map(len, metrics))
    print("\n".join(f"{k:<{width}}  {v:.4f}" for k, v in metrics.items()))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
