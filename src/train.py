#!/usr/bin/env python
"""Train Mask R-CNN from composed Hydra config groups (``python src/train.py --help``); the run itself is
:mod:`masklab.training`, imported after Hydra has answered ``--help``.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, installed or not

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from masklab import exit_on_error, on_interrupt, quiet_lightning, secrets
from masklab.track.resume import LAST_CHECKPOINT

log = logging.getLogger("masklab.train")
secrets.install()  # before Hydra's first line: a grid's launcher logs each job's overrides (a password in a URL)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from masklab.training import train  # torch and Lightning (5 s): not imported for --help or a config error

    quiet_lightning()
    hc = HydraConfig.get()
    multirun, trial = hc.mode == RunMode.MULTIRUN, cfg.sweep.trial_id is not None  # a grid's job or a trial
    errors = contextlib.nullcontext() if multirun else exit_on_error(log)  # hydra.callbacks or the sweeper record them
    stop = contextlib.nullcontext() if trial else on_interrupt(lambda: how_to_go_on(hc))  # a trial's: the sweeper's
    with errors, stop:
        return train(cfg, hc.runtime.output_dir)


def how_to_go_on(hc) -> None:
    last = Path(hc.runtime.output_dir) / LAST_CHECKPOINT
    if not last.is_file():
        log.warning("interrupted: no epoch had finished, so there is nothing to resume")
    elif hc.mode == RunMode.MULTIRUN:  # a grid's job: the same command would run every job again
        command = shlex.join(["python", "src/train.py", *hc.overrides.task, f"resume={last}"])
        log.warning("interrupted at job #%s: `%s` goes on from its last epoch; the grid's later jobs did not run",
                    hc.job.num, command)  # fmt: skip
    else:
        log.warning("interrupted: add resume=%s to the same command to go on from its last epoch", last)


if __name__ == "__main__":
    main()
