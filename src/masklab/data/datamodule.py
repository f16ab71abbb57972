"""One LightningDataModule for every dataset: train/val/test datasets + class names from config."""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from masklab import MasklabError
from masklab.data.dataset import CocoDataset
from masklab.data.transforms import Augment, CapInstances, Compose, to_tensor


def collate(batch):
    """Detection batches are lists: images differ in size and targets in instance count."""
    return tuple(zip(*batch))


class DetectionDataModule(L.LightningDataModule):
    def __init__(self, train: Dataset, val: Dataset, class_names, test: Dataset | None = None,
                 image_size: int | None = None, augmentation: Augment | None = None,
                 max_gt_instances: int = 100, batch_size: int = 2, num_workers: int = 0):
        super().__init__()
        self.image_size = image_size  # the data group's nominal size; the model resizes (image_min/max_size)
        self.class_names = list(class_names)
        self.batch_size, self.num_workers = batch_size, num_workers
        train.transform = Compose([augmentation, CapInstances(max_gt_instances), to_tensor])
        for ds in (val, test):
            if ds is not None:
                ds.transform = Compose([to_tensor])
        self.datasets = {"train": train, "val": val, "test": test}

    @property
    def num_classes(self) -> int:
        """Foreground classes + background (what torchvision's MaskRCNN calls num_classes)."""
        return len(self.class_names) + 1

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, collate_fn=collate,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test" if self.datasets["test"] is not None else "val", shuffle=False)


def from_prepared(root: str, image_size: int | None = None, drop_empty: bool = True, **kwargs) -> DetectionDataModule:
    """The datamodule of a dataset ``prepare.py`` wrote to ``root`` (train/val, and test when written)."""
    train = CocoDataset(root, "train", train=True, drop_empty=drop_empty)
    val = CocoDataset(root, "val")
    test = CocoDataset(root, "test") if (Path(root) / "annotations" / "test.json").is_file() else None
    return DetectionDataModule(train, val, train.class_names, test=test, image_size=image_size, **kwargs)


#: keys of a data group that describe the source (for prepare.py) or suggest other groups' values
#: (``epochs``: read by every schedule option), not the datamodule
SOURCE_KEYS = ("name", "source", "source_splits", "prepare", "epochs")


def check_sizes(cfg: DictConfig) -> None:
    """Counts and sizes that torch or the shapes generator would reject deep in a traceback (and
    ``schedule.epochs``, whose 0 would train nothing and exit 0): one line instead."""
    least = {"batch_size": 1, "num_workers": 0, "data.image_size": 8, "schedule.epochs": 1, "log_predictions": 0,
             **{f"data.{s}.num_images": 1 for s in ("train", "val", "test")}}
    for key, low in least.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise MasklabError(f"{key}={value}: must be an integer >= {low}")


def build_datamodule(cfg: DictConfig) -> DetectionDataModule:
    """The datamodule of a composed config: ``data`` group + augmentation + the plain loader keys."""
    check_sizes(cfg)
    data = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k not in SOURCE_KEYS}
    return instantiate(data, augmentation=instantiate(cfg.augmentation, _convert_="all"), max_gt_instances=cfg.max_gt_instances,
                       batch_size=cfg.batch_size, num_workers=cfg.num_workers, _convert_="object")
