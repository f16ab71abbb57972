"""Where things are: the project (the folder holding ``conf/``), this machine, checkpoints (a file or a URL)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

#: The project root: the folder holding ``conf/`` (the repository), else the working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
if not (PROJECT_ROOT / "conf").is_dir():  # installed into site-packages without the repo
    PROJECT_ROOT = Path.cwd()
CONFIG_DIR = PROJECT_ROOT / "conf"


def hostname() -> str:
    """This machine's name: where a run's files are (``MASKLAB_HOSTNAME`` overrides it: 'machines' in tests)."""
    return os.environ.get("MASKLAB_HOSTNAME") or socket.gethostname()


def is_url(path) -> bool:
    """An fsspec URL (a sweep's shared ``checkpoint_dir``: ``s3://``, ``gs://``, ``memory://``), not a local path."""
    return "://" in str(path)


def is_file(path) -> bool:
    """Whether a checkpoint is at a local path or fsspec URL."""
    if not is_url(path):
        return Path(path).is_file()
    import fsspec

    fs, inner = fsspec.core.url_to_fs(str(path))
    return fs.isfile(inner)


def absolute(path) -> str:
    """A local path resolved; a URL as it is (``Path`` makes ``s3://b/k`` into ``<cwd>/s3:/b/k``)."""
    return str(path) if is_url(path) else str(Path(path).resolve())


def load_checkpoint(path: str) -> dict:
    """A Lightning checkpoint, from a local file (memory-mapped: only what is read is loaded) or an fsspec URL
    (a sweep's shared ``checkpoint_dir``: ``s3://``, ``gs://``, ``memory://``)."""
    import torch

    if not is_url(path):
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    import fsspec

    with fsspec.open(str(path), "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=False)
