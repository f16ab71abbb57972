"""Per-epoch history of every ``train/*`` and ``val/*`` metric -> history.csv, loss and AP plots -> MLflow.

Training losses are logged per step (MLflow shows them as such); the history keeps their epoch mean,
so train and val can be drawn on one axis per loss (the seeds' Figs. 9-12). ``history.csv`` is also
what ``dvc plots`` reads.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import lightning.pytorch as L

from masklab.track.history import read_csv, write_csv
from masklab.viz import plots


class History(L.Callback):
    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.rows: list[dict] = []
        self._sums, self._counts = defaultdict(float), defaultdict(int)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for k, v in trainer.callback_metrics.items():
            if k.startswith("train/") and k != "train/lr":
                self._sums[k] = self._sums[k] + v.detach()  # a tensor: no GPU sync per step, one per epoch
                self._counts[k] += 1

    def state_dict(self) -> dict:
        return {"rows": self.rows}  # saved with every checkpoint: a resumed run's history has every epoch

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state.get("rows", []))

    def on_train_start(self, trainer, pl_module):
        # rows of a checkpoint from before they were saved in it: read back from the folder it was trained in
        path = self.out_dir / "history.csv"
        if trainer.ckpt_path and path.is_file() and not self.rows:
            self.rows = [{**r, "epoch": int(r["epoch"])} for r in read_csv(path)]
        self.rows = [r for r in self.rows if r["epoch"] < trainer.current_epoch]

    def on_validation_end(self, trainer, pl_module):
        # not on_validation_epoch_end: callbacks' epoch-end hooks run before the module logs the epoch's AP
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(self._sums[k]) / self._counts[k] for k in self._sums if self._counts[k]})
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        self._sums.clear(), self._counts.clear()
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        if trainer.is_global_zero:
            write_csv(self.rows, self.out_dir / "history.csv")

    def on_fit_end(self, trainer, pl_module):
        if not self.rows or not trainer.is_global_zero:
            return
        files = [
            plots.save(plots.loss_curves(self.rows, "train vs val loss per epoch"), self.out_dir / "loss_curves.png"),
            plots.save(plots.ap_curves(self.rows), self.out_dir / "ap_curves.png"),
            self.out_dir / "history.csv",
        ]
        logger = trainer.logger
        if logger is not None and hasattr(logger, "run_id") and hasattr(logger.experiment, "log_artifact"):
            for f in files:
                logger.experiment.log_artifact(logger.run_id, str(f), "plots")
