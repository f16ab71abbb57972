"""Inference with post-processing split off, so detection settings can be re-tuned without the network.

torchvision's Mask R-CNN post-processing (``RoIHeads.postprocess_detections`` + the transform's
``postprocess``) is: keep ``score > box_score_thresh``, drop tiny boxes, per-class NMS at
``box_nms_thresh``, keep the ``box_detections_per_img`` best, rescale boxes to the input image and
paste the 28×28 mask probabilities into it. :func:`raw_predictions` runs the network once with a
low score floor, NMS off and no cap, and keeps boxes in the network's resized frame with their 28×28
mask probabilities; :func:`postprocess` then applies any (confidence ≥ floor, NMS, max detections)
exactly as torchvision would, so an inference-only sweep equals re-running the model.
"""

from __future__ import annotations

import contextlib

import torch
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import batched_nms


@contextlib.contextmanager
def detection_settings(model: MaskRCNN, score_thresh: float, nms_thresh: float, max_dets: int):
    heads = model.roi_heads
    saved = heads.score_thresh, heads.nms_thresh, heads.detections_per_img
    heads.score_thresh, heads.nms_thresh, heads.detections_per_img = score_thresh, nms_thresh, max_dets
    try:
        yield model
    finally:
        heads.score_thresh, heads.nms_thresh, heads.detections_per_img = saved


@torch.no_grad()
def raw_predictions(model: MaskRCNN, images: list[torch.Tensor], score_floor: float = 0.05) -> list[dict]:
    """Per image: every detection with score > ``score_floor`` (no NMS, no cap), CPU tensors."""
    model.eval()
    sizes = [tuple(img.shape[-2:]) for img in images]
    with detection_settings(model, score_floor, 1.0, 10**9):  # IoU > 1.0 never happens: NMS off
        batch, _ = model.transform(images)
        features = model.backbone(batch.tensors)
        proposals, _ = model.rpn(batch, features)
        detections, _ = model.roi_heads(features, proposals, batch.image_sizes)
    return [
        {
            "boxes": d["boxes"].cpu(),
            "scores": d["scores"].cpu(),
            "labels": d["labels"].cpu(),
            "mask_probs": d["masks"].cpu(),
            "image_size": tuple(resized),
            "original_size": original,
        }
        for d, resized, original in zip(detections, batch.image_sizes, sizes)
    ]


def postprocess(raw: dict, score_thresh: float, nms_thresh: float, max_dets: int) -> dict:
    """torchvision's prediction dict (boxes, labels, scores, masks N×1×H×W) for one setting."""
    keep = torch.where(raw["scores"] > score_thresh)[0]
    boxes, scores, labels, probs = (raw[k][keep] for k in ("boxes", "scores", "labels", "mask_probs"))
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_dets]
    boxes = resize_boxes(boxes[keep], raw["image_size"], raw["original_size"])
    masks = paste_masks_in_image(probs[keep], boxes, raw["original_size"])
    return {"boxes": boxes, "labels": labels[keep], "scores": scores[keep], "masks": masks}
