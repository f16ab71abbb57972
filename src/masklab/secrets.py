"""Passwords in URLs (``postgresql://user:pw@host/db``, ``http://user:pw@mlflow``) never leave the process.

:func:`mask` replaces the password of every URL in a text with ``***``; :func:`install` masks every log record
(Optuna's and SQLAlchemy's too) before any handler sees it. A sweep hands its trials the masked storage URL and
keeps the real one in the environment (:data:`STORAGE_ENV`), where :func:`reveal` finds it again.
"""

from __future__ import annotations

import logging
import os
import re

from omegaconf import DictConfig, read_write

# a ':' may come escaped (\:), as Hydra writes a grid job's overrides
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][\w+.-]*\\?://[^:/@\s'\"\\]+\\?:)(?P<pw>[^@\s'\"]+)(?P<at>@)")
#: the sweep's real storage URL, for its trials (in this process or a launcher's child)
STORAGE_ENV = "MASKLAB_SWEEP_STORAGE"


def mask(text):
    """``text`` with the password of each URL in it replaced by ``***`` (non-strings as they are)."""
    return _CREDENTIALS.sub(r"\g<head>***\g<at>", text) if isinstance(text, str) else text


def mask_all(obj):
    """``obj`` (a config as plain containers) with :func:`mask` applied to every string in it."""
    if isinstance(obj, dict):
        return {k: mask_all(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [mask_all(v) for v in obj]
    return mask(obj)


def reveal(masked: str) -> str:
    """The real URL behind ``masked`` when this process holds it (:data:`STORAGE_ENV`), else ``masked``."""
    real = os.environ.get(STORAGE_ENV)
    return real if real and mask(real) == masked else masked


def hide_storage(config: DictConfig, storage: str | None) -> None:
    """Keep a sweep's real storage URL in this process's environment only; ``config`` (composed into every trial's)
    gets it masked, in ``hydra.sweeper.storage`` and the hydra overrides. The task overrides stay as given: they are
    the trials' arguments (a tracking URL's password included; their saved files: ``hydra.callbacks.mask_saved``)."""
    if storage:
        os.environ[STORAGE_ENV] = str(storage)
    with read_write(config.hydra):
        config.hydra.sweeper.storage = mask(storage)
        config.hydra.overrides.hydra = [mask(o) for o in config.hydra.overrides.hydra]


def install() -> None:
    """Mask every log record of this process from here on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "masks_secrets", False):
        return

    def masked(*args, **kwargs):
        record = factory(*args, **kwargs)
        message = record.getMessage()
        if _CREDENTIALS.search(message):
            record.msg, record.args = mask(message), None
        return record

    masked.masks_secrets = True
    logging.setLogRecordFactory(masked)
