"""Finding the checkpoint to resume from (``resume=true`` or a path)."""
from __future__ import annotations

from pathlib import Path

import torch

from masklab import MasklabError


def resume_checkpoint(resume, experiment_dir: Path) -> str | None:
    """``None``/false -> None; ``true`` -> newest ``*/checkpoints/last.ckpt`` under the experiment's outputs."""
    if resume in (None, False, "false", "null"):
        return None
    if resume is True or str(resume).lower() == "true":
        found = sorted(experiment_dir.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise MasklabError(f"resume=true: no */checkpoints/last.ckpt under {experiment_dir}; give resume=/path/to/last.ckpt")
        return str(found[-1])
    if not Path(resume).is_file():
        raise MasklabError(f"resume={resume}: no such checkpoint file")
    return str(resume)


def mlflow_run_id(ckpt_path: str | None) -> str | None:
    """The MLflow run a masklab checkpoint was logged to (so a resumed run continues its curves)."""
    if ckpt_path is None:
        return None
    return torch.load(ckpt_path, map_location="cpu", weights_only=False).get("mlflow_run_id")
