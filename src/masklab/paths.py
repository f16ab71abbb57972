"""Where the project is: the folder holding ``conf/``."""

from __future__ import annotations

from pathlib import Path

#: The project root: the folder holding ``conf/`` (the repository), else the working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
if not (PROJECT_ROOT / "conf").is_dir():  # installed into site-packages without the repo
    PROJECT_ROOT = Path.cwd()
CONFIG_DIR = PROJECT_ROOT / "conf"
