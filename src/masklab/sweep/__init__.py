"""Optuna sweeps: the Hydra Sweeper (``sweeper.py``), its search space, study storage and the trial bridge."""
