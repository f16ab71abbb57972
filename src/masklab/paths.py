"""Where things are: the project (the folder holding ``conf/``), this machine, checkpoints (a file or a URL)."""

from __future__ import annotations

import os
import posixpath
import socket
from pathlib import Path

from masklab.errors import MasklabError, first_line

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


def filesystem(url, key: str):
    """(fsspec filesystem, path in it) of ``url``, given as ``key``; one line when fsspec cannot read that kind."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(str(url))
    except (ImportError, ValueError) as exc:  # "Install s3fs to access S3", "Protocol not known: foo"
        raise MasklabError(f"{key}={url}: fsspec cannot open it here ({first_line(exc)})") from None


def read_text(url, key: str) -> str | None:
    """A small file's text at a local path or fsspec URL (given as ``key``); None where there is none."""
    fs, inner = filesystem(url, key)
    try:
        return fs.cat_file(inner).decode()
    except FileNotFoundError:
        return None


def write_text(url, text: str, key: str) -> None:
    """Write a small file at a local path or fsspec URL (given as ``key``), its folder made; one line if it cannot."""
    fs, inner = filesystem(url, key)
    try:
        fs.makedirs(posixpath.dirname(inner), exist_ok=True)
        fs.pipe_file(inner, text.encode())
    except OSError as exc:  # read-only, no permission, no such bucket
        raise MasklabError(f"{key}={url}: cannot write there ({first_line(exc)})") from None


def is_file(path, key: str = "ckpt") -> bool:
    """Whether a checkpoint is at a local path or fsspec URL."""
    if not is_url(path):
        return Path(path).is_file()
    fs, inner = filesystem(path, key)
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
    fs, inner = filesystem(path, "ckpt")
    with fs.open(inner, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=False)
