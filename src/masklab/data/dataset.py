"""The one Dataset over the canonical form (COCO JSON with RLE + images) for training, evaluation and prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from masklab import MasklabError
from masklab.data import rle
from masklab.data.target import make_target


class CocoDataset(Dataset):
    """``root/annotations/<split>.json`` + ``root/images``; labels are the category's 1-based rank by id.

    ``train=True`` leaves out crowd regions and (with ``drop_empty``) images without instances, as
    torchvision's detection references do; evaluation keeps everything.
    """

    def __init__(self, root: str | Path, split: str, train: bool = False, drop_empty: bool = True, transform=None):
        self.root, self.split, self.transform = Path(root), split, transform
        path = self.root / "annotations" / f"{split}.json"
        if not path.is_file():
            written = sorted(p.stem for p in (self.root / "annotations").glob("*.json"))
            if written:  # prepared, but without this split (e.g. data.prepare.split val=0)
                example = (
                    "{train: 0.8, val: 0.2}"
                    if split in ("train", "val")
                    else f"{{train: 0.7, val: 0.15, {split}: 0.15}}"
                )
                raise MasklabError(
                    f"{path} not found: {self.root} was prepared with the splits {written} only; prepare "
                    f"it again with a {split} share in data.prepare.split (e.g. {example})"
                )
            others = sorted({p.parent.parent.name for p in self.root.parent.glob("*/annotations/*.json")})
            have = f"; prepared in {self.root.parent}: {', '.join(others)}" if others else ""
            raise MasklabError(
                f"{path} not found: run `python src/prepare.py data=<this data option>` first "
                f"(the canonical dataset goes to {self.root}){have}"
            )
        coco = json.loads(path.read_text())
        cats = sorted(coco["categories"], key=lambda c: c["id"])
        self.class_names = [c["name"] for c in cats]
        self.label_of = {c["id"]: i + 1 for i, c in enumerate(cats)}
        anns = {im["id"]: [] for im in coco["images"]}
        for a in coco["annotations"]:
            if not (train and a.get("iscrowd", 0)):
                anns[a["image_id"]].append(a)
        self.images = [im for im in coco["images"] if not (train and drop_empty and not anns[im["id"]])]
        self.anns = anns

    def __len__(self) -> int:
        return len(self.images)

    def instance_count(self) -> int:
        """Instances in this split's images (crowd regions left out of training not counted)."""
        return sum(len(self.anns[im["id"]]) for im in self.images)

    def load_image(self, index: int) -> np.ndarray:
        with Image.open(self.root / "images" / self.images[index]["file_name"]) as im:
            return np.array(im.convert("RGB"))  # writable (torch.from_numpy warns on read-only arrays)

    def target(self, index: int) -> dict:
        info = self.images[index]
        anns = self.anns[info["id"]]
        h, w = info["height"], info["width"]
        masks = np.stack([rle.decode(a["segmentation"], h, w) for a in anns]) if anns else np.zeros((0, h, w), np.uint8)
        return make_target(
            masks,
            [self.label_of[a["category_id"]] for a in anns],
            info["id"],
            iscrowd=[a.get("iscrowd", 0) for a in anns],
        )

    def __getitem__(self, index: int):
        image, target = self.load_image(index), self.target(index)
        return self.transform(image, target) if self.transform is not None else (image, target)
