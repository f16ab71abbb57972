#!/usr/bin/env python
"""Convert a dataset to masklab's canonical form and validate it (``python src/prepare.py --help``).

compose config -> read ``data.source`` -> validate -> select classes -> split -> write the canonical
COCO JSON (RLE) + images + the validation report (JSON and Markdown) into ``data.root``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout, installed or not

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from masklab import exit_on_error  # noqa: E402
from masklab.data.prepare import prepare  # noqa: E402
from masklab.data.validate import markdown  # noqa: E402

log = logging.getLogger("masklab.prepare")


@hydra.main(config_path="../conf", config_name="prepare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_error(log):
        report = prepare(cfg)
    text = markdown(report)
    print(text.split("\n### ")[0])  # the tables; every record is in report.md / report.json
    for sentence in report.get("advice", []):
        log.warning("%s", sentence)
    root = Path(cfg.data.prepare.get("root") or cfg.data.root)
    print(f"canonical dataset: {root}\nreport: {root / 'report.md'}\ntrain on it: {train_command(cfg, root)}")


def train_command(cfg: DictConfig, root: Path) -> str:
    """The train.py command that reads what was just written: ``data=prepared data.name=<folder>`` looks in
    data/prepared/<folder>, so a prepared set written elsewhere (``data.root=...``) is named by its path."""
    default = Path(cfg.paths.root_dir) / "data" / "prepared" / root.name
    where = (
        f"data.name={root.name}" if root.resolve() == default.resolve() else f"data.name={root.name} data.root={root}"
    )
    return f"python src/train.py data=prepared {where}"


if __name__ == "__main__":
    main()
