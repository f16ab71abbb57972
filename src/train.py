#!/usr/bin/env python
"""Train Mask R-CNN from composed Hydra config groups (``python src/train.py --help``); the run itself is
:mod:`masklab.training`, imported after Hydra has answered ``--help``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, installed or not

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from masklab import exit_on_error, on_interrupt, quiet_lightning
from masklab.track.resume import LAST_CHECKPOINT

log = logging.getLogger("masklab.train")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from masklab.training import train  # torch and Lightning (5 s): not imported for --help or a config error

    quiet_lightning()
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:  # a sweep's trial or a grid job: hydra.callbacks record their failures
        return train(cfg, hc.runtime.output_dir)
    with exit_on_error(log), on_interrupt(lambda: how_to_go_on(hc.runtime.output_dir)):
        return train(cfg, hc.runtime.output_dir)


def how_to_go_on(output_dir: str) -> None:
    last = Path(output_dir) / LAST_CHECKPOINT
    log.warning("interrupted: %s", f"add resume={last} to the same command to go on from its last epoch"
                if last.is_file() else "no epoch had finished, so there is nothing to resume")  # fmt: skip


if __name__ == "__main__":
    main()
