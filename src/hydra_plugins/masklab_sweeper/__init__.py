"""Registers masklab's Optuna sweeper with Hydra (Hydra only loads plugins from the ``hydra_plugins`` package).

Hydra imports every plugin module whenever any CLI starts, so this one stays light (as Hydra's own Optuna plugin
does): the sweeper, with torch, Lightning and MLflow behind it, is imported when a sweep builds it. It and the
reasons for it: :mod:`masklab.sweep.sweeper`.
"""

from hydra.plugins.sweeper import Sweeper


class OptunaSweeper(Sweeper):
    """``hydra/sweeper=optuna`` (conf/hydra/sweeper/optuna.yaml)."""

    def __init__(self, **settings):
        from masklab.sweep.sweeper import OptunaSweeperBase

        self.sweeper = OptunaSweeperBase(**settings)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]):
        return self.sweeper.sweep(arguments)
