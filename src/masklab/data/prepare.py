"""``prepare.py``'s work: read a source format, validate, select classes, split, write the canonical form."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from masklab import MasklabError
from masklab.data import canonical
from masklab.data.auto import FALLBACK, resolve
from masklab.data.formats import Source
from masklab.data.stats import dataset_stats
from masklab.data.validate import RULES, Report, markdown, size_stats, split_tables

log = logging.getLogger("masklab.prepare")


def data_options() -> list[str]:
    """The data options prepare.py can read (conf/data/*.yaml but ``prepared``, which only reads its output)."""
    from masklab import CONFIG_DIR

    return sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml") if p.stem != "prepared")


def read_source(data: DictConfig) -> Source:
    """The ``data.source`` reader; with ``data.source_splits`` one read per given split (splits kept)."""
    if data.get("source") is None:
        raise MasklabError(
            f"data={data.get('name', '?')} has no 'source' to prepare (it reads a prepared dataset); "
            f"pick a format or preset: data={'|'.join(data_options())}"
        )
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
    for key in ("images", "masks"):  # folders: one line naming the key, not "0 images" or a reader's traceback
        if isinstance(kwargs.get(key), str) and kwargs[key] != "???" and not Path(kwargs[key]).exists():
            where = f"data.source_splits.{split}.{key}" if split else f"data.source.{key}"
            raise MasklabError(f"{where}={kwargs[key]}: no such folder")
    missing = [k for k, v in kwargs.items() if v == "???"]
    if missing:
        key = f"data.source.{missing[0]}"
        where = f" (or data.source_splits.{split}.{missing[0]})" if split else ""
        raise MasklabError(
            f"{key} is required for data={data.get('name', '?')}: give {key}=<path>{where}; "
            f"the format's keys: python src/prepare.py data={data.get('name', '<format>')} --help"
        )
    return kwargs


#: the sizes the report measures against when the auto settings cannot be derived
FALLBACK_SIZES = {
    "image_min_size": FALLBACK["data.image_size"],
    "image_max_size": FALLBACK["data.image_size"],
    "anchors": {"sizes": FALLBACK["anchors.sizes"]},
}


def _sources(data: DictConfig) -> dict:
    """The source as the report names it: the reader's keys, and each split's files with data.source_splits."""
    source = {k: v for k, v in OmegaConf.to_container(data.source, resolve=True).items() if v != "???"}
    if data.get("source_splits"):
        source["splits"] = OmegaConf.to_container(data.source_splits, resolve=True)
    return source


def drop_summary(report: Report, examples: int = 1) -> str:
    """'dropped: <rule> <count> (e.g. <detail>), ...': what the report dropped, most frequent first."""
    dropped = [(r, n) for r, n in sorted(report.counts().items(), key=lambda x: -x[1]) if RULES[r][0] == "dropped"]
    if not dropped:
        return "no annotation was given"
    parts = []
    for rule, n in dropped[:4]:
        seen = [e["detail"] for e in report.entries if e["rule"] == rule][:examples]
        parts.append(f"{rule} {n} (e.g. {'; '.join(seen)})")
    return "dropped: " + ", ".join(parts)


def _unusable(source: Source, report: Report, shown: int = 3) -> str:
    """Why no image could be used: the folder searched and the first missing (or unreadable) files."""
    missing = [im.path for im in source.images if im.data is None and not im.path.is_file()]
    if missing:
        folders = sorted({str(p.parent) for p in missing})
        names = ", ".join(p.name for p in missing[:shown]) + (" ..." if len(missing) > shown else "")
        return (
            f"{len(missing)} of {len(source.images)} image files not found in {', '.join(folders[:2])} "
            f"(first: {names}); "
            "point data.source.images at the folder that holds them"
        )
    unreadable = [e["detail"] for e in report.entries if e["rule"] == "image_unreadable"][:shown]
    if unreadable:
        return f"{report.counts()['image_unreadable']} images unreadable: " + "; ".join(unreadable)
    return drop_summary(report) if source.images else "the source lists no images"


def fit_report(cfg: DictConfig, stats: dict) -> dict:
    """What the ``auto`` settings of this config derive from ``stats`` (``auto``: {key: [value, reason]}), what does
    not fit (``advice``: sentences) and the numbers behind them (``fit``); ``cfg``: the resolved config."""
    try:
        rcfg, fit = resolve(cfg, stats, quiet=True)
    except MasklabError as exc:  # e.g. a train split without instances: said, and the report still written
        return {"cfg": None, "auto": {}, "advice": [str(exc)], "fit": {}}
    return {
        "cfg": rcfg,
        "auto": {k: [v, fit.reasons[k]] for k, v in fit.values.items()},
        "advice": fit.advice,
        "fit": fit.numbers,
    }


def prepare(cfg: DictConfig, progress: bool = True) -> dict:
    """Convert ``cfg.data.source`` into ``cfg.data.root``; return the report dict."""
    data = cfg.data
    source, report, opts = read_source(data), Report(), data.prepare
    exif = opts.get("exif_orientation", "upright")
    if exif not in ("upright", "stored"):
        raise MasklabError(f"data.prepare.exif_orientation must be upright or stored, got {exif!r}")
    items = canonical.collect(source, report, progress, upright=exif == "upright")
    if not items:
        raise MasklabError(f"{data.name}: no usable image in the source: {_unusable(source, report)}")
    try:
        class_names = canonical.select_classes(
            items, report, opts.get("classes"), int(opts.get("min_instances", 0)), source.categories
        )
    except MasklabError as exc:
        raise MasklabError(f"{exc}; {drop_summary(report)}") from None
    if not any(it["anns"] for it in items):  # a dataset that trains nothing: exit 1, not a "success" with nothing
        raise MasklabError(f"{data.name}: no instance left in {len(items)} images: {drop_summary(report)}")
    if not opts.get("keep_empty", True):
        items = [it for it in items if it["anns"]]
    splits = canonical.split_items(items, opts.split, int(opts.seed))

    def make_report(written: dict):
        stats = dataset_stats(written, class_names)
        fit = fit_report(cfg, stats)
        rcfg = fit.pop("cfg") or OmegaConf.create(FALLBACK_SIZES)
        rep = {
            "name": data.name,
            "source": _sources(data),
            "created": dt.datetime.now().isoformat(timespec="seconds"),
            "class_names": class_names,
            "splits": split_tables(written, class_names),
            "sizes": size_stats(written, int(rcfg.image_min_size), int(rcfg.image_max_size), rcfg.anchors.sizes),
            **fit,
            "stats": stats,
            "issue_counts": report.counts(),
            "issues": report.entries,
        }
        return rep, markdown(rep)

    root = Path(opts.get("root") or data.root)
    out = canonical.write(root, splits, class_names, make_report, opts.get("max_image_size"), progress, report)
    log.info("wrote %s", root)
    return out
