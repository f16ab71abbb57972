"""``prepare.py``'s work: read a source format, validate, select classes, split, write the canonical form."""
from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from masklab import MasklabError
from masklab.data import canonical
from masklab.data.formats import Source
from masklab.data.validate import Report, markdown, size_stats, split_tables

log = logging.getLogger("masklab.prepare")


def read_source(data: DictConfig) -> Source:
    """The ``data.source`` reader; with ``data.source_splits`` one read per given split (splits kept)."""
    if data.get("source") is None:
        raise MasklabError(f"data={data.get('name', '?')} has no 'source' to prepare (it reads a prepared dataset); "
                           "pick a format: data=coco|via|openimages|instance_png|imaterialist, a preset, or data=shapes")
    kwargs = OmegaConf.to_container(data.source, resolve=True)
    reader = get_method(kwargs.pop("_target_"))  # called directly: its DatasetError reaches the CLI unwrapped
    if not data.get("source_splits"):
        return reader(**_given(kwargs, data))
    merged = Source([], issues=[])
    for split, overrides in OmegaConf.to_container(data.source_splits, resolve=True).items():
        part = reader(**_given({**kwargs, **overrides}, data, split))
        for image in part.images:
            image.split = split
        merged.images += part.images
        merged.issues += part.issues
        merged.categories = merged.categories or part.categories
    return merged


def _given(kwargs: dict, data: DictConfig, split: str | None = None) -> dict:
    """``kwargs`` of the reader, or one line naming the first required source key left at ``???``."""
    missing = [k for k, v in kwargs.items() if v == "???"]
    if missing:
        key = f"data.source.{missing[0]}"
        where = f" (or data.source_splits.{split}.{missing[0]})" if split else ""
        raise MasklabError(f"{key} is required for data={data.get('name', '?')}: give {key}=<path>{where}; "
                           f"the format's keys: python src/prepare.py data={data.get('name', '<format>')} --help")
    return kwargs


def prepare(cfg: DictConfig, progress: bool = True) -> dict:
    """Convert ``cfg.data.source`` into ``cfg.data.root``; return the report dict."""
    data = cfg.data
    source, report, opts = read_source(data), Report(), data.prepare
    exif = opts.get("exif_orientation", "upright")
    if exif not in ("upright", "stored"):
        raise MasklabError(f"data.prepare.exif_orientation must be upright or stored, got {exif!r}")
    items = canonical.collect(source, report, progress, upright=exif == "upright")
    if not items:
        raise MasklabError(f"{data.name}: no usable image in the source ({report.counts() or 'no images listed'})")
    class_names = canonical.select_classes(items, report, opts.get("classes"), int(opts.get("min_instances", 0)),
                                           source.categories)
    if not opts.get("keep_empty", True):
        items = [it for it in items if it["anns"]]
    splits = canonical.split_items(items, opts.split, int(opts.seed))

    def make_report(written: dict):
        rep = {"name": data.name, "source": OmegaConf.to_container(data.source, resolve=True),
               "created": dt.datetime.now().isoformat(timespec="seconds"), "class_names": class_names,
               "splits": split_tables(written, class_names),
               "sizes": size_stats(written, int(cfg.image_min_size), int(cfg.image_max_size), cfg.anchors.sizes),
               "issue_counts": report.counts(), "issues": report.entries}
        return rep, markdown(rep)

    root = Path(opts.get("root") or data.root)
    out = canonical.write(root, splits, class_names, make_report, opts.get("max_image_size"), progress, report)
    log.info("wrote %s", root)
    return out
