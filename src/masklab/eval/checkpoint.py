"""A masklab checkpoint -> the LightningModule, its training config and class names."""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from masklab import MasklabError, first_line, paths
from masklab.checks import check_numbers
from masklab.data.canonical import digest
from masklab.model.build import NET_NUMBERS
from masklab.model.module import MaskRCNNModule, build_module
from masklab.track.mlflow_utils import open_client

log = logging.getLogger(__name__)

#: keys a user may change at evaluation/prediction time; everything else (the model) comes from the checkpoint
RUNTIME_KEYS = (
    "data",
    "nms",
    "batch_size",
    "num_workers",
    "image_min_size",
    "image_max_size",
    "paths",
    "experiment_name",
    "augmentation",
    "max_gt_instances",
)
#: the runtime keys the network itself reads (the others pick the data or filter the detections it returns)
NETWORK_KEYS = ("image_min_size", "image_max_size", "nms.rpn_nms_thresh")


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


#: ckpt=runs:/<run id> or the bare id, as MLflow names a run (its UI shows the 32 hex digits)
RUN_ID = re.compile(r"^(?:runs:/)?([0-9a-f]{32})/?$")


def checkpoint_path(spec, tracking_uri: str) -> str:
    """``ckpt=``: a checkpoint file, or an MLflow run: a training run's best checkpoint (its ``best_checkpoint``
    tag), a study's parent run its best trial's (a trial that repeated an earlier one's setting: that one's)."""
    match = RUN_ID.match(str(spec))
    if not match or Path(str(spec)).exists():
        return str(spec)
    from mlflow.exceptions import MlflowException

    client, run_id = open_client(tracking_uri, f"ckpt={spec}: "), match.group(1)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise MasklabError(f"ckpt={spec}: no MLflow run {run_id} in {tracking_uri}") from None
    if run.data.tags.get("masklab.role") == "study":
        run = _best_trial_run(client, run, spec)
    name, path = run.info.run_name, run.data.tags.get("best_checkpoint")
    if not path:
        raise MasklabError(
            f"ckpt={spec}: MLflow run {name} has no best checkpoint (it never validated, or failed before)"
        )
    if not paths.is_file(path):
        host = run.data.tags.get("host")
        where = f"trained on {host}" if host and host != paths.hostname() else "trained elsewhere"
        raise MasklabError(
            f"ckpt={spec}: MLflow run {name}'s best checkpoint {path} is not on this machine "
            f"({where}, moved or deleted); give its path instead"
        )
    log.info(
        "ckpt=%s: MLflow run %s, best checkpoint %s (%s %s)",
        spec,
        name,
        path,
        run.data.params.get("optimized_metric", "score"),
        run.data.tags.get("best_score", "?"),
    )
    return path


def _best_trial_run(client, study_run, spec):
    """The child run of the study's best trial, following ``same_as`` to the trial that trained the setting."""
    tags = study_run.data.tags
    number = tags.get("best_trial")
    if number is None:
        raise MasklabError(f"ckpt={spec}: study {tags.get('study')} has no best trial yet (no trial completed)")
    for _ in range(2):
        found = client.search_runs(
            [study_run.info.experiment_id],
            max_results=1,
            filter_string=(f"tags.mlflow.parentRunId = '{study_run.info.run_id}' and tags.trial_number = '{number}'"),
        )
        if not found:
            raise MasklabError(f"ckpt={spec}: study {tags.get('study')} has no MLflow run of its best trial {number}")
        if "same_as" not in found[0].data.tags:
            return found[0]
        number = found[0].data.tags["same_as"]
    return found[0]


def load_checkpoint(path: str | Path) -> tuple[MaskRCNNModule, DictConfig, str | None]:
    """A file or an fsspec URL (a sweep's shared ``checkpoint_dir``), on the CPU."""
    if not paths.is_file(path):
        raise MasklabError(f"{path}: checkpoint not found")
    try:
        ckpt = paths.load_checkpoint(path)
        hp = ckpt["hyper_parameters"]
        cfg = OmegaConf.create(hp["cfg"])
        module = build_module(cfg, class_names=hp.get("class_names"))
        module.load_state_dict(ckpt["state_dict"])
        module.data_digest = ckpt.get("data_digest")
    except (KeyError, RuntimeError, EOFError, TypeError, ValueError, pickle.UnpicklingError) as exc:
        raise MasklabError(f"{path}: not a masklab checkpoint ({first_line(exc, with_type=True)})") from None
    return module.eval(), cfg, ckpt.get("mlflow_run_id")


def runtime_config(trained: DictConfig, composed: DictConfig, overridden: list[str]) -> DictConfig:
    """The checkpoint's config, with the runtime keys the command line set taken from ``composed``."""
    cfg = OmegaConf.create(OmegaConf.to_container(trained))
    given = {o.lstrip("+~").split("=", 1)[0].split(".", 1)[0].split("@", 1)[0] for o in overridden}
    for key in RUNTIME_KEYS:
        if key in given or key == "paths":  # paths: where this machine keeps outputs and MLflow
            value = composed[key]  # a group (data, nms) or a plain key (batch_size)
            cfg[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return _trained_for_auto(cfg, trained)


def _trained_for_auto(cfg: DictConfig, trained: DictConfig, prefix: str = "") -> DictConfig:
    """``auto`` values the command line brought in (data=prepared's image_size, nms's detections) take the
    trained run's resolved value: the network was fitted at those."""
    for key in list(cfg.keys()):
        path, value = f"{prefix}{key}", cfg[key]
        if OmegaConf.is_dict(value):
            _trained_for_auto(value, trained, f"{path}.")
        elif value == "auto":
            cfg[key] = OmegaConf.select(trained, path, default=None)
    return cfg


def load_for_inference(
    cfg: DictConfig, overridden: list[str] | None = None
) -> tuple[MaskRCNNModule, DictConfig, list[str], str | None]:
    """evaluate.py's and predict.py's checkpoint ``cfg.ckpt``: (module, the run's config, the network keys it
    changes, MLflow run id). The run's config is the checkpoint's with the runtime keys the command line
    (``overridden``; default Hydra's) set (:func:`runtime_config`); the network keys among them (test-time
    image size, RPN NMS) are applied to the model, where they were baked in when it was built."""
    from hydra.core.hydra_config import HydraConfig

    if overridden is None:
        overridden = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    module, trained, run_id = load_checkpoint(checkpoint_path(cfg.ckpt, cfg.paths.tracking_uri))
    rcfg = runtime_config(trained, cfg, overridden)
    check_numbers(rcfg, NET_NUMBERS)  # nms.* given here
    changed = [
        f"{k}={OmegaConf.select(rcfg, k)}"
        for k in NETWORK_KEYS
        if OmegaConf.select(rcfg, k) != OmegaConf.select(trained, k)
    ]
    model = module.model
    model.transform.min_size, model.transform.max_size = (int(rcfg.image_min_size),), int(rcfg.image_max_size)
    model.rpn.nms_thresh = float(rcfg.nms.rpn_nms_thresh)
    return module, rcfg, changed, run_id


def warn_other_data(module: MaskRCNNModule, rcfg: DictConfig, cfg: DictConfig) -> None:
    """Say so when the data to score is not the data the model trained on (by their annotations' digests)."""
    root = OmegaConf.select(rcfg, "data.root", default=None)
    if (trained := module.data_digest) and (here := digest(root)) and here != trained:
        log.warning(
            "ckpt=%s trained on data whose annotations are %s; %s holds %s (other data, or prepared again: then its "
            "%s split may hold images the model trained on, and the metrics are too high)",
            cfg.ckpt, trained, root, here, cfg.split,
        )  # fmt: skip
