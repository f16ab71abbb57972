"""masklab: a hyperparameter experiment platform for Mask R-CNN transfer learning."""
from __future__ import annotations

import contextlib
import logging
import sys

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


@contextlib.contextmanager
def exit_on_error(log: logging.Logger | None = None):
    """The CLIs' contract: a :class:`MasklabError` becomes one ``error:`` line on stderr and exit code 1."""
    try:
        yield
    except MasklabError as exc:
        if log is not None:
            log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if not OmegaConf.has_resolver("masklab_root"):
    OmegaConf.register_new_resolver("masklab_root", lambda: str(PROJECT_ROOT))
if not OmegaConf.has_resolver("mul"):  # search spaces relative to a config value: ${mul:${optimizer.lr},0.25}
    OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))
