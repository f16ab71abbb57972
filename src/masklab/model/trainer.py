"""The Lightning Trainer of ``cfg.trainer`` (trainer=cpu|gpu|ddp), with its refusals made one line, and the trainer
settings a sweep's trials cannot have (each trial runs in one process)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hydra.utils import instantiate
from omegaconf import DictConfig

from masklab import MasklabError, causes, first_line, missing_cuda

if TYPE_CHECKING:  # Lightning (5 s): the sweeper checks its settings with this module before any trial imports it
    import lightning.pytorch as L

log = logging.getLogger("masklab.train")


def make_trainer(trainer: DictConfig, **kwargs) -> L.Trainer:
    """The Trainer of a (resolved) ``trainer`` node; Lightning's MisconfigurationException (trainer=gpu on a
    machine without one, more devices than it has) is one line naming the trainer settings."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if trainer.get("sync_batchnorm") and str(trainer.accelerator) == "cpu":  # trainer=ddp trainer.accelerator=cpu
        log.info("trainer.sync_batchnorm off: SyncBatchNorm needs CUDA (it raised ValueError in CPU processes)")
        kwargs["sync_batchnorm"] = False
    if "enable_model_summary" not in trainer:  # its table had one row and "FLOPs 0"; the module logs sizes by part
        kwargs.setdefault("enable_model_summary", False)
    try:
        return instantiate(trainer, **kwargs)
    except Exception as exc:  # Hydra wraps it: "Error in call to target 'lightning.pytorch.trainer.trainer.Trainer'"
        cause = next((e for e in causes(exc) if isinstance(e, MisconfigurationException)), None)
        if cause is None:
            raise
        t = trainer
        hint = (
            "; no CUDA GPU is visible here: use trainer=cpu (or trainer.accelerator=auto)"
            if missing_cuda(t.accelerator)
            else ""
        )
        raise MasklabError(
            f"trainer (accelerator={t.accelerator}, devices={t.devices}, strategy={t.get('strategy', 'auto')}): "
            f"{first_line(cause)}{hint}"
        ) from None


#: Lightning strategies that run a trial in several processes
MULTIPROCESS = ("ddp", "fsdp", "deepspeed")


def refuse_multiprocess(config, dists) -> None:
    """A trial runs in one process. Lightning's DDP launcher starts the other ranks by re-running the command
    line, which in a sweep re-runs the *sweep*: ranks of different trials join one process group and train as one
    (Lightning-AI/pytorch-lightning#11300, facebookresearch/hydra#2070). Parallel workers use several GPUs."""
    t = config.get("trainer") or {}
    strategy = str(t.get("strategy", "auto"))
    several = str(t.get("devices", 1)) not in ("1", "[0]") or int(t.get("num_nodes", 1) or 1) > 1
    swept = [str(c) for c in getattr(dists.get("trainer"), "choices", ())]
    if strategy.startswith(MULTIPROCESS) and several:
        what = f"trainer.strategy={strategy} with devices={t.get('devices')}, num_nodes={t.get('num_nodes', 1)}"
    elif any(c.startswith(MULTIPROCESS) for c in swept):
        what = f"trainer=choice({','.join(swept)})"
    else:
        return
    raise MasklabError(
        f"{what} in a sweep: each trial runs in one process "
        "(Lightning's DDP launcher would re-run the sweep in every rank). Use the GPUs as parallel workers, "
        "one per GPU on the same study: CUDA_VISIBLE_DEVICES=<i> python src/train.py -m hydra/sweeper=optuna "
        "trainer=gpu ... (README: Parallel workers)"
    )


def refuse_gpu_trials_without_gpu(config, dists) -> None:
    """``trainer=gpu`` on a machine with no CUDA GPU: every trial failed the same way until max_failures."""
    accelerator = (config.get("trainer") or {}).get("accelerator", "cpu")
    if "trainer" not in dists and missing_cuda(accelerator):  # a swept trainer may still pick cpu
        raise MasklabError(
            f"trainer.accelerator={accelerator}: no CUDA GPU is visible here, so no trial could run; "
            "use trainer=cpu (or trainer.accelerator=auto)"
        )


def free_memory() -> None:
    """A failed (e.g. out-of-memory) job must not leave its tensors to the next one in this process, nor its cached
    GPU memory to other processes on the GPU (drop the job's exception first: its traceback holds them)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
