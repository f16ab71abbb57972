"""The run's picture of its model: the first val images, ground truth beside the best checkpoint's prediction."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L

from masklab import MasklabError
from masklab.callbacks import stopped
from masklab.eval.gallery import log_predictions

#: the gallery's count (0 = none)


class PredictionGallery(L.Callback):
    """``n`` val images drawn after the test into ``<out_dir>/predictions`` and MLflow ``predictions/``."""

    def __init__(self, n: int, out_dir: str | Path):
        if isinstance(n, bool) or not isinstance(n or 0, int) or (n or 0) < 0:  # log_predictions feeds n
            raise MasklabError(f"log_predictions={n}: must be an integer >= 0")
        self.n, self.out_dir = int(n or 0), Path(out_dir)

    def after_test(self, trainer: L.Trainer, module: L.LightningModule, metrics: dict) -> None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
        if self.n and best and not stopped(trainer.callbacks) and trainer.is_global_zero:  # not a pruned trial
            log_predictions(self.n, module, trainer.datamodule, best, self.out_dir, trainer.logger or None)
