"""Small variants of torchvision's heads that the seeds explored by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.rpn import RegionProposalNetwork


class DropoutTwoMLPHead(TwoMLPHead):
    """torchvision's box head (fc6, fc7: same state_dict keys) with dropout after each FC + ReLU."""

    def __init__(self, in_channels: int, representation_size: int, dropout: float = 0.0):
        super().__init__(in_channels, representation_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = self.dropout(F.relu(self.fc6(x.flatten(start_dim=1))))
        return self.dropout(F.relu(self.fc7(x)))


class L2BoxLossRPN(RegionProposalNetwork):
    """torchvision's RPN with an L2 box-regression loss instead of smooth-L1 (beta 1/9).

    Used by swapping the class of an RPN built by ``MaskRCNN`` (no new state), so that the
    proposal matcher, sampler and NMS settings stay exactly torchvision's.
    """

    def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
        pos, neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos, dim=0))[0]
        neg = torch.where(torch.cat(neg, dim=0))[0]
        sampled = torch.cat([pos, neg], dim=0)
        labels = torch.cat(labels, dim=0)
        regression_targets = torch.cat(regression_targets, dim=0)
        box_loss = F.mse_loss(pred_bbox_deltas[pos], regression_targets[pos], reduction="sum") / sampled.numel()
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels[sampled])
        return objectness_loss, box_loss
