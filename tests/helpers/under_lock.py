"""``python tests/helpers/under_lock.py <train.py's arguments>``: runs ``src/train.py`` and writes to the JSON file
``$MASKLAB_LOCK_LOG`` the modules each hold of the storage's lock imported: seconds every other worker waits."""

import contextlib
import json
import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from masklab.sweep import storage  # noqa: E402

real, holds = storage.lock, []


@contextlib.contextmanager
def watched(*args):
    with real(*args):
        before = set(sys.modules)
        try:
            yield
        finally:
            holds.append(sorted(set(sys.modules) - before))


storage.lock = watched
sys.argv = [str(ROOT / "src" / "train.py"), *sys.argv[1:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    Path(os.environ["MASKLAB_LOCK_LOG"]).write_text(json.dumps(holds))
