#!/usr/bin/env python
"""Run a checkpoint on images, a folder or a video (``python src/predict.py --help``); the run itself is
:mod:`masklab.prediction`, imported after Hydra has answered ``--help``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, installed or not

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from masklab import PREDICT_OOM_ADVICE, exit_on_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with exit_on_error(oom_advice=PREDICT_OOM_ADVICE):
        for key in ("ckpt", "input"):  # left out: said before torch is imported (not data.*: prepare's keys)
            OmegaConf.select(cfg, key, throw_on_missing=True)
        from masklab.prediction import run  # torch and OpenCV (5 s): not imported for --help or a config error

        out = run(cfg, Path(cfg.output or HydraConfig.get().runtime.output_dir))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
