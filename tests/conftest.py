"""Shared fixtures: the real config composed and shrunk (tiny images, few images, small heads)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(SRC))

from hydra import compose, initialize_config_dir  # noqa: E402

#: overrides that make any run fast on a 2-core CPU while keeping every code path
TINY = [
    "data.image_size=64", "data.train.num_images=4", "data.val.num_images=2", "data.train.max_instances=2",
    "data.val.max_instances=2", "batch_size=2", "num_workers=0", "schedule.epochs=1",
    "model.fpn_channels=32", "model.box_head_dim=64", "model.mask_head_channels=16", "rois_per_image=32",
    "logger=none", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
]


def compose_cfg(overrides=(), tiny: bool = True):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*(TINY if tiny else []), *overrides])


@pytest.fixture
def tiny_cfg():
    return compose_cfg


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test tracks to its own MLflow store and writes outputs under tmp_path."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("PYTHONPATH", str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def needs_shared(*parts: str) -> Path:
    """Path under ../shared, or skip the test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (real data/weights live beside the project in ../shared; CI has them)")
    return path
