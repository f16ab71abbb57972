"""predict.py's ``input=`` as image files, and the names their drawings get in one output folder."""

from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path

from masklab import MasklabError
from masklab.data.formats.instance_png import IMAGE_EXTENSIONS


def image_paths(spec: str) -> list[Path]:
    """``input=``: one image, a folder's images, or a glob pattern (``'photos/*.jpg'``, ``'data/**/*.png'``: quoted,
    or the shell expands it into words Hydra refuses)."""
    src = Path(spec)
    if not src.exists() and any(c in spec for c in "*?["):
        paths = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise MasklabError(f"input={spec}: no image ({', '.join(IMAGE_EXTENSIONS)}) matches the pattern")
        return paths
    if not src.exists():
        raise MasklabError(f"input={src}: not found")
    if not src.is_dir():
        return [src]
    paths = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise MasklabError(f"input={src}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
    return paths


def output_names(paths: list[Path]) -> list[str]:
    """Each image's name in the output folder: its stem; its file name where a stem is shared (a.jpg, a.png); its
    path below the images' common folder, ``/`` as ``__``, where a file name is shared (x/a.jpg, y/a.jpg)."""
    stems, names = Counter(p.stem for p in paths), Counter(p.name for p in paths)
    root = Path(os.path.commonpath([p.resolve().parent for p in paths])) if paths else Path()
    return [
        p.stem
        if stems[p.stem] == 1
        else p.name
        if names[p.name] == 1
        else "__".join(p.resolve().relative_to(root).parts)
        for p in paths
    ]
