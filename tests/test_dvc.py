"""`dvc repro` on a copy of the repository: it runs, is up to date after, re-runs only downstream."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

TINY_PIPELINE = """
# tiny budget for the test
data:
  image_size: 64
schedule:
  epochs: 2
  warmup_iters: 2
batch_size: 2
num_workers: 0
model:
  fpn_channels: 32
  box_head_dim: 64
  mask_head_channels: 16
trainer:
  enable_progress_bar: false
"""


def sh(*cmd, cwd, env=None):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture
def repo(tmp_path):
    if shutil.which("dvc") is None or shutil.which("git") is None:
        pytest.skip("dvc and git CLIs are needed")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    dst = tmp_path / "repo"
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    shapes = dst / "conf" / "data" / "shapes.yaml"
    text = shapes.read_text()
    assert "num_images: 1100" in text, "this test shrinks the train split of conf/data/shapes.yaml: update it"
    shapes.write_text(text.replace("num_images: 1100", "num_images: 6").replace("num_images: 100", "num_images: 3"))
    (dst / "conf" / "pipeline.yaml").write_text((dst / "conf" / "pipeline.yaml").read_text() + TINY_PIPELINE)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    sh("git", "init", "-q", cwd=dst)
    sh("git", "add", "-A", cwd=dst)
    sh("git", "commit", "-qm", "copy", cwd=dst, env=env)
    return dst, env


def test_dvc_repro_metrics_plots_and_only_downstream_reruns(repo):
    dst, env = repo
    first = sh("dvc", "repro", cwd=dst, env=env)
    for stage in ("prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in first
    assert json.loads((dst / "dvc" / "train_metrics.json").read_text())["best"] is not None
    assert "val/segm_AP" in json.loads((dst / "dvc" / "evaluate" / "metrics.json").read_text())
    assert (dst / "dvc" / "history.csv").read_text().count("\n") == 1 + 2  # header + 2 epochs
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=dst, env=env))
    assert "dvc/evaluate/metrics.json" in json.dumps(shown) and "val/segm_AP" in json.dumps(shown)
    sh("dvc", "plots", "show", "-o", str(dst / "dvc_plots"), cwd=dst, env=env)
    assert (dst / "dvc_plots" / "index.html").is_file()
    again = sh("dvc", "repro", cwd=dst, env=env)
    assert "Running stage" not in again  # nothing changed, nothing runs
    sgd = dst / "conf" / "optimizer" / "sgd.yaml"
    sgd.write_text(sgd.read_text().replace("lr: 0.02", "lr: 0.01"))
    third = sh("dvc", "repro", cwd=dst, env=env)
    assert "Running stage 'train'" in third and "Running stage 'evaluate'" in third
    assert "Running stage 'prepare'" not in third
