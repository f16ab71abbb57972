"""The Lightning Trainer of ``cfg.trainer`` (trainer=cpu|gpu|ddp), with its refusals made one line."""

from __future__ import annotations

import logging

import lightning.pytorch as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from masklab import MasklabError, causes, missing_cuda
from masklab.data.auto import resolved

log = logging.getLogger("masklab.train")


def make_trainer(cfg: DictConfig, **kwargs) -> L.Trainer:
    """The Trainer of ``cfg.trainer``; Lightning's MisconfigurationException (trainer=gpu on a machine
    without one, more devices than it has) is one line naming the trainer settings."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    cfg = resolved(cfg)  # trainer.check_val_every_n_epoch=auto
    if (
        cfg.trainer.get("sync_batchnorm") and str(cfg.trainer.accelerator) == "cpu"
    ):  # trainer=ddp trainer.accelerator=cpu
        log.info("trainer.sync_batchnorm off: SyncBatchNorm needs CUDA (it raised ValueError in CPU processes)")
        kwargs["sync_batchnorm"] = False
    if "enable_model_summary" not in cfg.trainer:  # its table had one row and "FLOPs 0"; the module logs sizes by part
        kwargs.setdefault("enable_model_summary", False)
    try:
        return instantiate(cfg.trainer, **kwargs)
    except Exception as exc:  # Hydra wraps it: "Error in call to target 'lightning.pytorch.trainer.trainer.Trainer'"
        cause = next((e for e in causes(exc) if isinstance(e, MisconfigurationException)), None)
        if cause is None:
            raise
        t = cfg.trainer
        hint = (
            "; no CUDA GPU is visible here: use trainer=cpu (or trainer.accelerator=auto)"
            if missing_cuda(t.accelerator)
            else ""
        )
        raise MasklabError(
            f"trainer (accelerator={t.accelerator}, devices={t.devices}, strategy={t.get('strategy', 'auto')}): "
            f"{str(cause).strip().splitlines()[0]}{hint}"
        ) from None
