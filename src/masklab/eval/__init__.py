"""Evaluation of a checkpoint: one pass of the network, then COCO/VOC/confusion metrics, plots and re-tuning."""
