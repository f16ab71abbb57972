"""The one function that builds torchvision's ``MaskRCNN`` from a composed config, and its weights.

Weights (see conf/config.yaml and conf/backbone/*.yaml):
  * ``backbone.weights``: null (random) | ``imagenet`` (torchvision weights API) | a local state_dict
  * ``model.weights``: null | ``coco`` (torchvision weights API, r50 only) | a local full-model
    state_dict or masklab checkpoint. Tensors whose shape differs (the box and mask predictors when
    ``num_classes`` differs) are re-initialised; everything else loads, and the log says which.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from torchvision.models import get_weight
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork

from masklab import CONFIG_DIR, MasklabError, causes
from masklab.checks import in_range
from masklab.data.auto import resolved
from masklab.model.backbones import downloading, load_backbone_state_dict, load_weights_file
from masklab.model.heads import DropoutTwoMLPHead, L2BoxLossRPN

log = logging.getLogger(__name__)

#: trainable_layers -> lowest backbone stage that trains (Matterport's layer sets; 6 = none: heads only)
TRAINABLE = {"heads": 6, "3+": 3, "4+": 4, "5+": 5, "all": 1}


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"weights from {self.source}: loaded {len(self.loaded)} tensors, re-initialised "
            f"{len(self.reinitialised)} ({', '.join(self.reinitialised) or 'none'}), "
            f"not in source {len(self.missing)}"
        )


def anchor_generator(sizes, aspect_ratios, backbone: str = "", num_maps: int = 5) -> AnchorGenerator:
    """One size per FPN map (every masklab backbone gives 5: strides 4..64), the same ratios on each; torchvision's
    nested form ((32,), (64,), ...) is taken too."""
    given = OmegaConf.to_container(sizes) if OmegaConf.is_config(sizes) else list(sizes)
    sizes = [s[0] if isinstance(s, (list, tuple)) and len(s) == 1 else s for s in given]
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise MasklabError(
            f"anchors.sizes={given}: one positive number per feature map, e.g. anchors.sizes=[16,32,64,128,256]"
        )
    sizes = [int(s) for s in sizes]
    if len(sizes) != num_maps:
        raise MasklabError(
            f"anchors.sizes has {len(sizes)} sizes {sizes} but backbone '{backbone}' gives {num_maps} "
            f"feature maps (strides 4..64): give exactly one size per map, e.g. anchors.sizes=[16,32,64,128,256]"
        )
    ratios = tuple(float(r) for r in aspect_ratios)
    return AnchorGenerator(sizes=tuple((s,) for s in sizes), aspect_ratios=(ratios,) * num_maps)


#: the network's numeric keys (model.net reads them), checked before it is built
NET_NUMBERS = {
    "nms.rpn_nms_thresh": (in_range(0, 1), "an IoU in [0, 1]"),
    "nms.box_nms_thresh": (in_range(0, 1), "an IoU in [0, 1]"),
    "nms.box_score_thresh": (in_range(0, 1), "a confidence in [0, 1]"),
    "nms.box_detections_per_img": (in_range(1, None, integer=True), "an integer >= 1"),
    "rois_per_image": (in_range(1, None, integer=True), "an integer >= 1"),
    "box_head_dropout": (in_range(0, 1, high_open=True), "a probability in [0, 1)"),
}


def build_model(cfg: DictConfig, num_classes: int) -> MaskRCNN:
    """torchvision ``MaskRCNN`` from the ``model.net`` tree (conf/model/standard.yaml), then ``model.weights``."""
    cfg = resolved(cfg)
    net = cfg.model.get("net")
    if net is None:  # a checkpoint from before the tree: its own short keys fill today's template
        net = todays_node(cfg, "model.net", OmegaConf.load(CONFIG_DIR / "model" / "standard.yaml").net)
    try:
        model = instantiate(net, num_classes=num_classes)
    except InstantiationException as exc:  # one line for the user, not Hydra's "Error in call to target"
        cause = next((e for e in causes(exc) if isinstance(e, MasklabError)), None)
        if cause is None:
            raise
        raise cause from None
    if cfg.model.weights:
        log.info(load_full_model(model, _full_model_state(cfg.model.weights, cfg.backbone)).summary())
    return model


def todays_node(cfg: DictConfig, key: str, template: DictConfig) -> DictConfig:
    """``template`` (today's node ``key``) resolved against ``cfg``: for a config saved before ``key`` existed."""
    merged = OmegaConf.merge(cfg)  # a copy: the caller's config keeps what it was saved with
    OmegaConf.update(merged, key, template, force_add=True)
    return OmegaConf.create(OmegaConf.to_container(OmegaConf.select(merged, key), resolve=True))


#: ``rpn_box_loss`` -> the RPN class torchvision's MaskRCNN builds (same state: only the loss differs)
RPN_LOSSES = {"smooth_l1": RegionProposalNetwork, "l2": L2BoxLossRPN}


def mask_rcnn(
    backbone,
    anchor_generator: AnchorGenerator,
    box_head,
    box_predictor,
    mask_head,
    mask_predictor,
    num_classes: int,
    rpn_box_loss: str = "smooth_l1",
    skip_resize: bool = False,
    **kwargs,
) -> MaskRCNN:
    """torchvision's ``MaskRCNN`` from its parts (each a node of ``model.net``); the predictors are partials that
    take ``num_classes`` (the data's classes + background). ``skip_resize``: tiles come at the training scale."""
    if rpn_box_loss not in RPN_LOSSES:
        raise MasklabError(f"rpn_box_loss must be one of {list(RPN_LOSSES)}, got {rpn_box_loss!r}")
    model = MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchor_generator,
        box_head=box_head,
        box_predictor=box_predictor(num_classes=num_classes),
        mask_head=mask_head,
        mask_predictor=mask_predictor(num_classes=num_classes),
        _skip_resize=bool(skip_resize),
        **kwargs,
    )
    model.rpn.__class__ = RPN_LOSSES[rpn_box_loss]
    return model


def backbone_fpn(spec: DictConfig, fpn_channels: int, model_weights=None):
    """The ``backbone`` group's builder (its ``_target_``) with an FPN ``fpn_channels`` wide, and its weights file.
    Batch-norm statistics stay frozen with pretrained weights (backbone or full model), as torchvision does."""
    pretrained = bool(spec.weights) or bool(model_weights)
    backbone = get_method(spec._target_)(
        arch=spec.arch,
        weights=spec.weights,
        imagenet_weights=spec.imagenet_weights,
        fpn_channels=fpn_channels,
        frozen_bn=pretrained,
    )
    if spec.weights not in (None, "imagenet"):
        missing, unexpected = load_backbone_state_dict(backbone, spec.weights)
        n_body = len(backbone.body.state_dict())
        if len(missing) == n_body:
            raise MasklabError(
                f"{spec.weights}: no tensor matches backbone '{spec.arch}' (unexpected keys: {unexpected[:3]} ...)"
            )
        log.info(
            "backbone weights from %s: loaded %d/%d tensors, missing %s, unexpected %s",
            spec.weights,
            n_body - len(missing),
            n_body,
            missing[:5],
            unexpected[:5],
        )
    return backbone


def two_mlp_head(fpn_channels: int, representation_size: int, dropout: float = 0.0, resolution: int = 7):
    """The box head on ``resolution``² RoI features (torchvision's MultiScaleRoIAlign) of an FPN that wide."""
    return DropoutTwoMLPHead(fpn_channels * resolution**2, representation_size, dropout)


def _full_model_state(weights_spec, backbone: DictConfig) -> tuple[str, dict]:
    """(source, state_dict) of ``model.weights``: ``coco`` through torchvision's weights API, or a file."""
    if weights_spec == "coco":
        if not backbone.coco_weights:
            raise MasklabError(
                f"model.weights=coco: torchvision has no COCO Mask R-CNN for backbone "
                f"'{backbone.arch}' (only r50); use backbone.weights=imagenet or a local file"
            )
        weights = get_weight(backbone.coco_weights)
        with downloading("model.weights=coco", weights):
            return str(weights), weights.get_state_dict(progress=True)
    state = load_weights_file(
        "model.weights",
        weights_spec,
        weights_only=False,
        hint=" (model.weights takes a full-model state_dict or masklab checkpoint file, coco or null)",
    )
    if any(k.startswith("model.") for k in state):  # a masklab Lightning checkpoint
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    return str(weights_spec), state


def load_full_model(model: torch.nn.Module, source_state: tuple[str, dict]) -> LoadReport:
    """Load every tensor whose name and shape match; the rest (predictors for other classes) stay new."""
    source, state = source_state
    own = model.state_dict()
    report = LoadReport(source)
    usable = {}
    for name, tensor in state.items():
        if name not in own:
            continue
        if own[name].shape == tensor.shape:
            usable[name] = tensor
            report.loaded.append(name)
        else:
            report.reinitialised.append(name)
    report.missing = [n for n in own if n not in state]
    if not report.loaded:
        raise MasklabError(f"{source}: no tensor matches this model (is it a Mask R-CNN state_dict?)")
    model.load_state_dict(usable, strict=False)
    return report


def set_trainable(model: MaskRCNN, layers: str) -> tuple[int, int]:
    """Freeze backbone stages below ``layers`` (heads | 3+ | 4+ | 5+ | all); FPN, RPN, heads always train.

    Returns (trainable, total) parameter counts.
    """
    if layers not in TRAINABLE:
        raise MasklabError(f"trainable layers must be one of {list(TRAINABLE)}, got {layers!r}")
    lowest = TRAINABLE[layers]
    stage_of = model.backbone.stage_of
    for child, module in model.backbone.body.named_children():
        for p in module.parameters():
            p.requires_grad_(stage_of[child] >= lowest)
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


#: the parts of torchvision's Mask R-CNN :func:`parameter_summary` counts (module path -> name in the line)
PARTS = {
    "backbone.body": "backbone",
    "backbone.fpn": "FPN",
    "rpn": "RPN",
    "roi_heads.box_head": "box head",
    "roi_heads.box_predictor": "box predictor",
    "roi_heads.mask_head": "mask head",
    "roi_heads.mask_predictor": "mask predictor",
}


def parameter_summary(model: MaskRCNN) -> str:
    """One line of the model's size by part, e.g. ``7.7M parameters (29.3 MiB): backbone 2.97M, FPN 222.1k,
    ...``: what Lightning's one-row summary table (its FLOPs column 0, as the model has no example input) said
    less of. Parts are counted in full; which of them train is the stage line's business."""
    counts = {}
    for path, name in PARTS.items():
        part = model.get_submodule(path)
        counts[name] = sum(p.numel() for p in part.parameters())
    total = sum(p.numel() for p in model.parameters())
    size = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    other = total - sum(counts.values())
    parts = [f"{name} {_count(n)}" for name, n in counts.items()] + ([f"other {_count(other)}"] if other else [])
    return f"{total / 1e6:.1f}M parameters ({size:.1f} MiB): {', '.join(parts)}"


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"
