"""COCO evaluation and other metrics; never imports model or train code."""
