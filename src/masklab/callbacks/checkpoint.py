"""Checkpoints that survive a resume into another folder, and the random state that makes a resume exact."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint; resumed into another folder (``resume=true`` opens a new run folder), it keeps
    the best score and copies the best file here, so the best epoch before the resume still counts."""

    @property
    def state_key(self) -> str:  # ModelCheckpoint's: checkpoints written before this class resume into it
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict) -> None:
        old = state_dict.get("dirpath", self.dirpath)
        best = state_dict.get("best_model_path")
        if old == self.dirpath or not best or not Path(best).is_file() or self.dirpath is None:
            return super().load_state_dict(state_dict)
        copy = Path(self.dirpath) / Path(best).name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(best, copy)
        score = state_dict["best_model_score"]
        super().load_state_dict(
            {
                **state_dict,
                "dirpath": self.dirpath,
                "best_model_path": str(copy),
                "kth_best_model_path": str(copy),
                "best_k_models": {str(copy): score},
                "last_model_path": "",
            }
        )


class RngState(L.Callback):
    """The Python, NumPy and torch generators saved with every checkpoint and restored with it when training
    starts (after the sanity check, whose validation losses sample RoIs): a resumed run draws what the
    uninterrupted one would (the RPN and RoI samplers, dropout)."""

    def __init__(self) -> None:
        self._loaded: dict | None = None

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict) -> None:
        self._loaded = state

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._loaded is None:
            return
        state, self._loaded = self._loaded, None
        random.setstate(state["python"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


class ValidateLastEpoch(L.Callback):
    """Validate the last epoch even when ``check_val_every_n_epoch`` does not divide the epochs (Lightning validates
    when ``(epoch + 1) % n == 0``), and the step where a ``max_steps`` budget ends inside an epoch (Lightning stops
    there without validating): the best checkpoint, test and history then reach the end of training."""

    def on_train_epoch_start(self, trainer, pl_module):
        n = trainer.check_val_every_n_epoch
        if n and n > 1 and trainer.max_epochs and trainer.current_epoch == trainer.max_epochs - 1:
            trainer.check_val_every_n_epoch = 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.check_val_every_n_epoch = 1
            trainer.should_stop = True  # Lightning validates a stopping epoch at this batch
