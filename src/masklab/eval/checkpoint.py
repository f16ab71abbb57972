"""A masklab checkpoint -> the LightningModule, its training config and class names."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from masklab import MasklabError
from masklab.model.module import MaskRCNNModule

#: keys a user may change at evaluation/prediction time; everything else (the model) comes from the checkpoint
RUNTIME_KEYS = ("data", "nms", "batch_size", "num_workers", "image_min_size", "image_max_size", "paths",
                "experiment_name", "augmentation", "max_gt_instances")


def resolve_device(value: str) -> str:
    """``device=auto|cpu|cuda|cuda:<index>`` as a torch device, or one line saying why it cannot be used here."""
    value = str(value)
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cpu":
        return value
    head, _, index = value.partition(":")
    if head != "cuda" or (index and not index.isdigit()):
        raise MasklabError(f"device={value}: choose auto, cpu, cuda or cuda:<index>")
    if not torch.cuda.is_available():
        raise MasklabError(f"device={value}: no CUDA GPU is visible here; use device=cpu (or auto)")
    if index and int(index) >= torch.cuda.device_count():
        raise MasklabError(f"device={value}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return value


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[MaskRCNNModule, DictConfig, str | None]:
    path = Path(path)
    if not path.is_file():
        raise MasklabError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
        hp = ckpt["hyper_parameters"]
        cfg = OmegaConf.create(hp["cfg"])
        module = MaskRCNNModule(cfg, class_names=hp.get("class_names"))
        module.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError, EOFError, TypeError, ValueError, pickle.UnpicklingError) as exc:
        raise MasklabError(f"{path}: not a masklab checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return module.eval(), cfg, ckpt.get("mlflow_run_id")


def runtime_config(trained: DictConfig, composed: DictConfig, overridden: list[str]) -> DictConfig:
    """The checkpoint's config, with the runtime keys the command line set taken from ``composed``."""
    cfg = OmegaConf.create(OmegaConf.to_container(trained))
    given = {o.lstrip("+~").split("=", 1)[0].split(".", 1)[0].split("@", 1)[0] for o in overridden}
    for key in RUNTIME_KEYS:
        if key in given or key == "paths":  # paths: where this machine keeps outputs and MLflow
            cfg[key] = OmegaConf.to_container(composed[key], resolve=True)
    return cfg
