"""Shared fixtures: the real config composed and shrunk (tiny images, few images, small heads)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(SRC))

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # -n N: the cores shared out, or N workers x torch's threads thrash
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # inherited by the CLIs the tests start
        os.environ.setdefault(_var, _threads)

from hydra import compose, initialize_config_dir  # noqa: E402

import masklab  # noqa: E402,F401  (before any test module's albumentations: no version check reaching pypi.org)


def pytest_configure(config):
    """``-n N`` alone distributes with ``worksteal``, not xdist's ``load``: the long sweep tests would otherwise
    queue behind one worker. Set here, not in pyproject's addopts, where ``--dist`` broke every pytest run
    without pytest-xdist (``pip install -e .`` without ``[dev]``, or ``-p no:xdist``)."""
    given = any(a == "-d" or a.startswith("--dist") for a in config.invocation_params.args)
    if getattr(config.option, "dist", "no") == "load" and not given:
        config.option.dist = "worksteal"


#: overrides that make any run fast on a 2-core CPU while keeping every code path
TINY_MODEL = [
    "data.image_size=64",
    "batch_size=2",
    "num_workers=0",
    "schedule.epochs=1",
    "model.fpn_channels=32",
    "model.box_head_dim=64",
    "model.mask_head_channels=16",
    "rois_per_image=32",
    "logger=none",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "log_predictions=0",
]
#: ... and for the shapes data (whose own optimizer is adamw_scratch; the tests' learning rates are SGD's)
TINY = TINY_MODEL + [
    "data.train.num_images=4",
    "data.val.num_images=2",
    "data.train.max_instances=2",
    "data.val.max_instances=2",
    "optimizer=sgd",
]

#: torch 2.11's out-of-memory message, as an H100 run gave it (a process capped at 4 GiB, batch 512: RESULTS_NOTES.md)
OUT_OF_MEMORY = (
    "CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 79.18 GiB of which 74.61 GiB "
    "is free. Including non-PyTorch memory, this process has 4.56 GiB memory in use. 3.96 GiB allowed; Of the "
    "allocated memory 3.84 GiB is allocated by PyTorch, and 115.24 MiB is reserved by PyTorch but unallocated. "
    "If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
    "to avoid fragmentation.  See documentation for Memory Management  "
    "(https://docs.pytorch.org/docs/stable/notes/cuda.html#optimizing-memory-usage-with-pytorch-cuda-alloc-conf)"
)


def sigint_as_in_a_terminal() -> None:
    """A Popen's ``preexec_fn`` to press Ctrl-C in: a test worker may ignore SIGINT, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def compose_cfg(overrides=(), tiny: bool = True):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*(TINY if tiny else []), *overrides])


@pytest.fixture
def tiny_cfg():
    return compose_cfg


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test tracks to its own MLflow store and writes outputs (run folders, studies) under tmp_path, also
    the CLIs it starts: the checkout stays clean."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MASKLAB_OUTPUT_ROOT", str(tmp_path / "outputs"))
    monkeypatch.setenv("MASKLAB_MULTIRUN_ROOT", str(tmp_path / "multirun"))
    monkeypatch.setenv("PYTHONPATH", str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def imported_modules(stderr: str) -> tuple[set[str], str]:
    """(the modules a process run with PYTHONPROFILEIMPORTTIME=1 imported, its stderr without those lines)."""
    lines = stderr.splitlines()
    timed = [line for line in lines if line.startswith("import time")]
    return {line.rsplit("|", 1)[-1].strip() for line in timed}, "\n".join(x for x in lines if x not in timed)


def mlflow_store(folder: Path) -> str:
    """The URI of an MLflow store in ``folder`` (kept if there), copied from an empty one made once per test process:
    MLflow's migrations take ~2 s a store, which every sweep test paid. Creating a store is tested where it matters
    (test_recovery) and by every other test that tracks to MLflow."""
    from masklab.track.mlflow_utils import ensure_store

    db, empty = folder / "mlflow.db", folder.parent / "empty-mlflow.db"  # parent: this process's pytest basetemp
    if not db.exists():
        ensure_store(f"sqlite:///{empty}")
        shutil.copyfile(empty, db)
    return f"sqlite:///{db}"


def needs_shared(*parts: str) -> Path:
    """Path under ../shared, or skip the test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (real data/weights live beside the project in ../shared; CI has them)")
    return path


def make_tiny_prepared(tmp_path: Path, n: int = 4, size: int = 64) -> Path:
    """A canonical dataset written by prepare.py's own code from tiny instance-id PNGs (two classes)."""
    import numpy as np
    from PIL import Image

    from masklab.data.prepare import prepare
    from masklab.data.shapes import ShapesDataset

    (tmp_path / "src_img").mkdir(parents=True)
    (tmp_path / "src_mask").mkdir()
    shapes = ShapesDataset(n, size, max_instances=2, seed=1)
    for i in range(n):
        image, target = shapes[i]
        ids = np.zeros((size, size), np.uint8)
        for k, m in enumerate(target["masks"].numpy(), start=1):
            ids[m.astype(bool)] = k
        Image.fromarray(image).save(tmp_path / "src_img" / f"s{i}.png")
        Image.fromarray(ids, mode="L").save(tmp_path / "src_mask" / f"s{i}_mask.png")
    cfg = compose_cfg(
        [
            "data=instance_png",
            f"data.root={tmp_path / 'prepared'}",
            f"data.source.images={tmp_path / 'src_img'}",
            f"data.source.masks={tmp_path / 'src_mask'}",
            "data.prepare.split={train:0.5,val:0.5}",
        ],
        tiny=False,
    )
    prepare(cfg, progress=False)
    return tmp_path / "prepared"
