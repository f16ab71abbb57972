"""masklab: a hyperparameter experiment platform for Mask R-CNN transfer learning.

The package face: the error contract (:mod:`masklab.errors`), the project's paths (:mod:`masklab.paths`) and, on
import, the OmegaConf resolvers the configs use (:mod:`masklab.resolvers`, which Hydra needs) and albumentations' check
for a newer version of itself turned off (``NO_ALBUMENTATIONS_UPDATE=0`` turns it back on).
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else every process asks pypi.org (2-s timeout offline)

from masklab import resolvers  # noqa: F401  (registers ${masklab_root:}, ${mul:}, ${px:}, the --help resolvers)
from masklab.cli_help import quiet_lightning
from masklab.errors import (
    EVALUATE_OOM_ADVICE,
    PREDICT_OOM_ADVICE,
    TRAINING_OOM_ADVICE,
    MasklabError,
    StudySettingError,
    causes,
    exit_on_error,
    first_line,
    missing_cuda,
    on_interrupt,
    out_of_memory,
    user_message,
)
from masklab.paths import CONFIG_DIR, PROJECT_ROOT

__version__ = "0.1.0"
__all__ = [
    "CONFIG_DIR",
    "EVALUATE_OOM_ADVICE",
    "PREDICT_OOM_ADVICE",
    "PROJECT_ROOT",
    "TRAINING_OOM_ADVICE",
    "MasklabError",
    "StudySettingError",
    "causes",
    "exit_on_error",
    "first_line",
    "missing_cuda",
    "on_interrupt",
    "out_of_memory",
    "quiet_lightning",
    "user_message",
]
