"""Where the project is: the folder holding ``conf/``."""

from __future__ import annotations

from pathlib import Path

#: The project root: the folder holding ``conf/`` (the repository), else the working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
if not (PROJECT_ROOT / "conf").is_dir():  # installed into site-packages without the repo
    PROJECT_ROOT = Path.cwd()
CONFIG_DIR = PROJECT_ROOT / "conf"


def load_checkpoint(path: str) -> dict:
    """A Lightning checkpoint, from a local file (memory-mapped: only what is read is loaded) or an fsspec URL
    (a sweep's shared ``checkpoint_dir``: ``s3://``, ``gs://``, ``memory://``)."""
    import torch

    if "://" not in str(path):
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    import fsspec

    with fsspec.open(str(path), "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=False)
