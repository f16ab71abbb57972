"""Finding the checkpoint to resume from (``resume=true`` or a path)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from masklab import MasklabError
from masklab.paths import is_file, load_checkpoint

#: a run's checkpoint of its latest epoch, in its folder (callbacks.last_checkpoint): what resume=true looks for
LAST_CHECKPOINT = "checkpoints/last.ckpt"


def resume_checkpoint(resume, experiment_dir: Path) -> str | None:
    """``None``/false -> None; ``true`` -> newest ``*/checkpoints/last.ckpt`` under the experiment's outputs."""
    if resume in (None, False, "false", "null"):
        return None
    if resume is True or str(resume).lower() == "true":
        found = sorted(experiment_dir.glob(f"*/{LAST_CHECKPOINT}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise MasklabError(
                f"resume=true: no */{LAST_CHECKPOINT} under {experiment_dir}; give resume=/path/to/last.ckpt"
            )
        return str(found[-1])
    if not is_file(resume, "resume"):  # a local file, or an fsspec URL (a sweep's shared checkpoint_dir)
        raise MasklabError(f"resume={resume}: no such checkpoint file")
    return str(resume)


def check_resumable(ckpt_path: str, module, cfg: DictConfig) -> str | None:
    """The MLflow run the checkpoint was logged to (a resumed run continues its curves), once the checkpoint
    is known to fit: resuming continues the same model and optimizer. A checkpoint of another model
    (backbone, widths, anchors, classes) failed deep inside Lightning with a page of size mismatches, and
    one of another optimizer with ``KeyError: 'step'``: one line instead, naming the settings that differ."""
    # memory-mapped: only shapes are compared (an r50 checkpoint with optimizer state is ~0.5 GB)
    ckpt = load_checkpoint(ckpt_path)
    hp = ckpt.get("hyper_parameters") or {}
    trained = OmegaConf.create(hp.get("cfg") or {})
    own, theirs = module.state_dict(), ckpt.get("state_dict") or {}
    differ = sorted(
        k for k in own.keys() | theirs.keys() if k not in own or k not in theirs or own[k].shape != theirs[k].shape
    )
    names = hp.get("class_names")
    other_classes = names is not None and list(names) != list(module.class_names)
    changed = _changed(trained, cfg, ("backbone", "model", "anchors"))
    if other_classes:
        changed.append(f"classes {list(names)} -> {list(module.class_names)}")
    instead = (
        f"resume with the settings it was trained with, or start a new run from its weights: model.weights={ckpt_path}"
    )
    if differ or other_classes:
        what = f"{len(differ)} tensors differ, e.g. {differ[0]}" if differ else "the classes differ"
        raise MasklabError(
            f"resume={ckpt_path}: it is a checkpoint of another model ({what}; "
            f"{', '.join(changed[:4]) or 'settings unknown'}); {instead}"
        )
    before, now = OmegaConf.select(trained, "optimizer._target_"), OmegaConf.select(cfg, "optimizer._target_")
    if before and before != now:
        raise MasklabError(
            f"resume={ckpt_path}: it was trained with {before}, this run has {now}, and an optimizer's "
            f"state cannot continue in another; {instead}"
        )
    return ckpt.get("mlflow_run_id")


def _changed(trained: DictConfig, cfg: DictConfig, groups) -> list[str]:
    """``key: old -> new`` for the model-defining settings (weights files aside) that differ."""
    out = []
    for group in groups:
        a = OmegaConf.to_container(trained[group]) if group in trained else {}
        b = OmegaConf.to_container(cfg[group]) if group in cfg else {}
        for key in sorted(a.keys() | b.keys()):
            derived = key == "net" and group == "model"  # the tree the short keys feed: they name the change
            if key != "weights" and not key.endswith("_weights") and not derived and a.get(key) != b.get(key):
                out.append(f"{group}.{key}: {a.get(key)} -> {b.get(key)}")
    return out
