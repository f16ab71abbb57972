"""A plain Hydra grid (``-m optimizer.lr=0.01,0.1``): every job runs, and the failed ones are listed at the end.

Hydra's basic sweeper re-raises the first failed job's exception after the batch, with a traceback. A job that
failed with a user error (bad value, missing file: a one-line message) is recorded here and counted as done;
at the end of the grid the list is printed and the command exits non-zero. A bug keeps its traceback. Optuna
trials are the sweeper's to record.
"""

from __future__ import annotations

import logging
import math
import sys

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from masklab import user_message

log = logging.getLogger("masklab.train")


class GridFailures(Callback):
    def __init__(self) -> None:
        self.failed: list[str] = []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if job_return.status != JobStatus.FAILED or OmegaConf.select(config, "sweep.trial_id") is not None:
            return
        message = user_message(job_return._return_value)
        if message is None:  # a bug: Hydra raises it with its traceback
            return
        num, where = config.hydra.job.num, config.hydra.runtime.output_dir
        log.error("job #%s failed: %s", num, message)
        self.failed.append(f"#{num} {where}: {message}")
        job_return.status, job_return.return_value = JobStatus.COMPLETED, math.nan

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.failed:
            sys.exit(f"error: {len(self.failed)} job(s) of the multirun failed:\n" + "\n".join(self.failed))
