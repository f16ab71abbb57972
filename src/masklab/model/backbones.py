"""Backbone builders (the ``backbone`` group's ``_target_``s): torchvision's FPN builders, 5 maps each.

Every builder returns a ``BackboneWithFPN`` giving 5 feature maps (strides 4, 8, 16, 32, 64: four
backbone levels + FPN's max-pool level), so one ``anchors`` group fits every backbone with one size
per level. It also carries ``stage_of``: first-level child of ``body`` -> stage 1..5 (stride 2^stage),
which is how ``trainable_layers`` (heads, 3+, 4+, 5+, all) selects what trains, for any backbone.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torchvision import models
from torchvision.models import get_weight
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from masklab import MasklabError, first_line

_RESNET_STAGES = {"conv1": 1, "bn1": 1, "layer1": 2, "layer2": 3, "layer3": 4, "layer4": 5}


def _norm(frozen_bn: bool):
    """Pretrained weights keep their BN statistics frozen; from scratch BN must learn (torchvision's rule)."""
    return FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d


def _imagenet(weights, imagenet_weights):
    """torchvision weights enum for ``weights=imagenet`` (downloaded by torch.hub on first use)."""
    return get_weight(imagenet_weights) if weights == "imagenet" else None


@contextlib.contextmanager
def downloading(key: str, weights):
    """Around a torchvision call that fetches ``weights`` through its weights API (into torch.hub's cache
    on first use): a failed download (offline, a proxy, a timeout) becomes one line saying where the
    file can be put by hand, instead of urllib's traceback."""
    try:
        yield
    except OSError as exc:  # urllib's URLError/HTTPError, a socket timeout, a full disk
        if weights is None:
            raise
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise MasklabError(
            f"{key}: downloading {weights} from {weights.url} failed ({getattr(exc, 'reason', None) or exc}); "
            f"without internet, copy that file into {cache}/ (set TORCH_HOME to move it) "
            f"or give {key.split('=')[0]}=<a local file>"
        ) from None


def _with_fpn_channels(bb: BackboneWithFPN, fpn_channels: int) -> BackboneWithFPN:
    """Same body, an FPN of another width (torchvision's builders fix it at 256)."""
    if fpn_channels != bb.out_channels:
        in_channels = [m[0].in_channels for m in bb.fpn.inner_blocks]  # Conv2dNormActivation blocks
        bb.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        bb.out_channels = fpn_channels
    return bb


def resnet_fpn(
    arch: str, weights=None, imagenet_weights=None, fpn_channels: int = 256, frozen_bn: bool = False
) -> BackboneWithFPN:
    """ResNet/ResNeXt + FPN through ``torchvision...resnet_fpn_backbone`` (all layers trainable here)."""
    pretrained = _imagenet(weights, imagenet_weights)
    with downloading("backbone.weights=imagenet", pretrained):
        bb = resnet_fpn_backbone(
            backbone_name=arch, weights=pretrained, norm_layer=_norm(frozen_bn), trainable_layers=5
        )
    bb = _with_fpn_channels(bb, fpn_channels)
    bb.stage_of = dict(_RESNET_STAGES)
    return bb


def mobilenet_fpn(
    arch: str, weights=None, imagenet_weights=None, fpn_channels: int = 256, frozen_bn: bool = False
) -> BackboneWithFPN:
    """MobileNetV2/V3 features + FPN on the last block of each stride 4, 8, 16, 32.

    torchvision's ``mobilenet_backbone`` taps the *first* block of a stride and by default only the
    two stride-32 levels; here the whole feature extractor is used (so an ImageNet ``features``
    state_dict loads strictly) and the FPN gets the same four strides as the ResNets.
    """
    pretrained = _imagenet(weights, imagenet_weights)
    with downloading("backbone.weights=imagenet", pretrained):
        features = models.__dict__[arch](weights=pretrained, norm_layer=_norm(frozen_bn)).features
    firsts = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]  # stride-2 blocks
    lasts = [i - 1 for i in firsts[1:]] + [len(features) - 1]  # last block at strides 4, 8, 16, 32
    bb = BackboneWithFPN(
        features,
        {str(i): str(k) for k, i in enumerate(lasts)},
        [features[i].out_channels for i in lasts],
        fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    stage, bb.stage_of = 1, {}
    for i in range(len(features)):
        stage += int(i in firsts)
        bb.stage_of[str(i)] = min(stage, 5)
    return bb


def load_weights_file(key: str, path: str, weights_only: bool = True, hint: str = "") -> dict:
    """The tensors of a local weights file (a checkpoint's ``state_dict`` unwrapped); a missing or unreadable
    file is one line naming the config ``key``, the file and the problem (``hint``: what the key takes)."""
    if not Path(path).is_file():
        raise MasklabError(f"{key}={path}: file not found{hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # not a torch file, truncated, or pickled classes weights_only refuses
        raise MasklabError(
            f"{key}={path}: not a readable PyTorch weights file ({first_line(exc, with_type=True)[:200]})"
        ) from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise MasklabError(f"{key}={path}: holds a {type(obj).__name__}, not a state_dict of tensors{hint}")
    return state


def load_backbone_state_dict(backbone: BackboneWithFPN, path: str) -> tuple[list[str], list[str]]:
    """Load a local backbone state_dict (body keys, optionally prefixed ``body.``/``backbone.body.``)."""
    state = load_weights_file(
        "backbone.weights", path, hint=" (backbone.weights takes a local state_dict file, imagenet or null)"
    )
    for prefix in ("backbone.body.", "body.", "features."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    result = backbone.body.load_state_dict(state, strict=False)
    return list(result.missing_keys), list(result.unexpected_keys)
