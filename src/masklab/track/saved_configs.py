"""``hydra.callbacks.mask_saved``: the files Hydra saves for a job (``.hydra/*.yaml``, a grid's ``multirun.yaml``)
keep every URL's password masked, whichever key of the command line carried it (:mod:`masklab.secrets`)."""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from masklab.secrets import mask


class MaskSaved(Callback):
    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        """Hydra has just saved them (``run_job``), and the job has not started."""
        hc = config.hydra
        files = list(Path(hc.runtime.output_dir, hc.output_subdir).glob("*.yaml")) if hc.output_subdir else []
        if hc.mode == RunMode.MULTIRUN:  # written by the grid's sweeper before its first job
            files.append(Path(hc.sweep.dir) / "multirun.yaml")
        for f in files:
            if f.is_file() and (text := f.read_text()) != (masked := mask(text)):
                f.write_text(masked)
