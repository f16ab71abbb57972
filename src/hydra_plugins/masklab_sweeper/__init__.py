"""Registers masklab's Optuna sweeper with Hydra (Hydra only loads plugins from the ``hydra_plugins`` package).

The implementation and the reasons for it live in :mod:`masklab.sweep.sweeper`.
"""

from masklab.sweep.sweeper import OptunaSweeperBase


class OptunaSweeper(OptunaSweeperBase):
    """``hydra/sweeper=optuna`` (conf/hydra/sweeper/optuna.yaml)."""
