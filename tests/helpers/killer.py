"""A callback the resume tests add from the command line (``+callbacks.kill=...``): SIGKILL at an epoch's start."""

import os
import signal

import lightning.pytorch as L


class KillAtEpoch(L.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)  # as a machine that goes away: no cleanup runs
