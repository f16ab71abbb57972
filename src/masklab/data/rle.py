"""COCO masks in JSON form <-> arrays: the one place that encodes, decodes and converts RLE counts.

JSON-ready RLEs carry ``counts`` as ``str``; pycocotools wants ``bytes`` (compressed) or a list
(uncompressed) - :func:`as_pycoco` converts, whichever form it is given.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils


def encode_masks(masks: np.ndarray) -> list[dict]:
    """N×H×W binary masks -> COCO compressed RLEs (JSON-ready: counts as str)."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8).transpose(1, 2, 0)))  # wants H×W×N
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def encode(mask: np.ndarray) -> dict:
    """One H×W binary mask -> a JSON-ready compressed RLE."""
    return encode_masks(mask[None])[0]


def as_pycoco(rle: dict) -> dict:
    """A compressed RLE with ``str`` counts -> the ``bytes`` form pycocotools takes (others unchanged)."""
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii")} if isinstance(counts, str) else rle


def decode(seg, height: int, width: int) -> np.ndarray:
    """H×W uint8 mask of a COCO segmentation: polygons, uncompressed or compressed RLE."""
    if isinstance(seg, list):  # polygons (a canonical file edited by hand, or a plain COCO file)
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, height, width)))
    if isinstance(seg["counts"], list):
        return mask_utils.decode(mask_utils.frPyObjects(seg, height, width))
    return mask_utils.decode(as_pycoco(seg))
