"""masklab: a hyperparameter experiment platform for Mask R-CNN transfer learning."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

#: The project root: the folder holding ``conf/`` (the repository), else the working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
if not (PROJECT_ROOT / "conf").is_dir():  # installed into site-packages without the repo
    PROJECT_ROOT = Path.cwd()
CONFIG_DIR = PROJECT_ROOT / "conf"


class MasklabError(Exception):
    """An error with a one-line message for the user (the CLIs print it and exit non-zero)."""


if not OmegaConf.has_resolver("masklab_root"):
    OmegaConf.register_new_resolver("masklab_root", lambda: str(PROJECT_ROOT))
