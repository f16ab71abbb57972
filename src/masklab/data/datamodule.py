"""One LightningDataModule for every dataset: train/val/test datasets + class names from config."""

from __future__ import annotations

import lightning.pytorch as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Sampler

from masklab import MasklabError
from masklab.checks import check_least, in_range
from masklab.data.auto import resolved
from masklab.data.dataset import CocoDataset
from masklab.data.transforms import Augment, CapInstances, Compose, ScaleCrop, to_tensor
from masklab.paths import load_checkpoint


def resumed_epoch(ckpt_path: str | None) -> int:
    """The epoch a run resumed from ``ckpt_path`` starts at (epochs the checkpoint finished); 0 without one."""
    if not ckpt_path:
        return 0
    ckpt = load_checkpoint(ckpt_path)
    return int(
        ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {}).get("processed", 0)
    )


def collate(batch):
    """Detection batches are lists: images differ in size and targets in instance count."""
    return tuple(zip(*batch))


class EpochSampler(Sampler):
    """Training order and per-image augmentation seeds as a function of (seed, epoch): a resumed run sees the
    batches and augmentations the uninterrupted one would. Yields ``(index, seed)``; Lightning calls ``set_epoch``."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order, seeds = torch.randperm(self.n, generator=g), torch.randint(2**31 - 1, (self.n,), generator=g)
        return iter(zip(order.tolist(), seeds.tolist()))


class Seeded(Dataset):
    """``dataset[(index, seed)]``: the item with every random draw of its transforms (crops, albumentations) taken
    from ``seed``, whatever process or worker loads it; the caller's generators are left as they were."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU generator only: fork_rng restores no other
            return self.dataset[index]


class DetectionDataModule(L.LightningDataModule):
    def __init__(
        self,
        train: Dataset,
        val: Dataset,
        class_names,
        test: Dataset | None = None,
        image_size: int | None = None,
        augmentation: Augment | None = None,
        max_gt_instances: int = 100,
        batch_size: int = 2,
        num_workers: int = 0,
        crop_size: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.seed = seed  # of the training order and augmentation (EpochSampler)
        self.image_size = image_size  # the data group's nominal size; the model resizes (image_min/max_size)
        self.class_names = list(class_names)
        self.batch_size, self.num_workers = batch_size, num_workers
        tiles = ScaleCrop(image_size, crop_size) if crop_size else None  # the model then skips its own resize
        if train is not None:  # evaluate.py reads a prepared set that may have no train split
            train.transform = Compose([tiles, augmentation, CapInstances(max_gt_instances), to_tensor])
        for ds in (val, test):
            if ds is not None:
                ds.transform = Compose([to_tensor])
        self.datasets = {"train": train, "val": val, "test": test}
        self.missing: dict[str, str] = {}  # split -> why it is None (a prepared set without it)

    @property
    def num_classes(self) -> int:
        """Foreground classes + background (what torchvision's MaskRCNN calls num_classes)."""
        return len(self.class_names) + 1

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.datasets[split]
        return DataLoader(
            Seeded(ds) if shuffle else ds,
            batch_size=self.batch_size,
            sampler=EpochSampler(len(ds), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),  # workers' base seed: not from the global generator
        )

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.check_instances()

    def check_instances(self) -> None:
        """Training on a split without instances learns (or scores) nothing and still ended 'successfully'."""
        for split in ("train", "val"):
            ds = self.datasets[split]
            if ds is None:
                raise MasklabError(self.missing[split])
            count = getattr(ds, "instance_count", None)
            if count is not None and count() == 0:
                where = getattr(ds, "root", "the data")
                raise MasklabError(
                    f"{where}: the {split} split has no instances ({len(ds)} images), nothing to "
                    f"{'learn' if split == 'train' else 'score'}: its report.md says what was dropped; "
                    "prepare it again (data.prepare.split / seed, or fix the annotations)"
                )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", shuffle=True)
        # Lightning takes the first epoch's iterator before it restores the loop state: the epoch from the checkpoint
        loader.sampler.set_epoch(resumed_epoch(self.trainer.ckpt_path if self.trainer is not None else None))
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test" if self.datasets["test"] is not None else "val", shuffle=False)


def from_prepared(
    root: str, image_size: int | None = None, drop_empty: bool = True, crop_size: int | None = None, **kwargs
) -> DetectionDataModule:
    """The datamodule of a dataset ``prepare.py`` wrote to ``root`` (train/val, and test when written)."""
    missing, splits = {}, {}
    for split in ("train", "val", "test"):
        try:
            splits[split] = CocoDataset(root, split, train=split == "train", drop_empty=drop_empty)
        except MasklabError as exc:  # training needs train and val (check_instances); evaluation one held-out split
            splits[split], missing[split] = None, str(exc)
    names = next((ds.class_names for ds in splits.values() if ds is not None), None)
    if names is None:
        raise MasklabError(missing["train"])
    dm = DetectionDataModule(
        splits["train"], splits["val"], names, test=splits["test"], image_size=image_size, crop_size=crop_size, **kwargs
    )
    dm.missing = missing
    return dm


#: keys of a data group that describe the source (for prepare.py), derive auto values (``auto``) or suggest other
#: keys' values (``epochs``, ``steps``: read by every schedule option; ``batch_size``, ``grad_clip_norm``), not the
#: datamodule
SOURCE_KEYS = ("name", "source", "source_splits", "prepare", "epochs", "steps", "auto", "batch_size", "grad_clip_norm")


#: the loader's and data's counts and sizes (torch or the shapes generator would reject them deep in a traceback)
SIZES = {
    "batch_size": 1,
    "num_workers": 0,
    "data.image_size": 8,
    "data.crop_size": 32,
    **{f"data.{s}.num_images": 1 for s in ("train", "val", "test")},
}
#: ... and the data's numeric keys the module checks with the network's
DATA_NUMBERS = {"max_gt_instances": (in_range(1, None, integer=True), "an integer >= 1")}


def build_datamodule(cfg: DictConfig) -> DetectionDataModule:
    """The datamodule of a composed config: ``data`` group + augmentation + the plain loader keys."""
    cfg = resolved(cfg)  # train.py resolved (and logged) them already; evaluate/benchmarks/tests may not have
    check_least(cfg, SIZES)  # the data's counts and sizes: one line instead of a traceback
    data = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k not in SOURCE_KEYS}
    return instantiate(
        data,
        augmentation=instantiate(cfg.augmentation, _convert_="all"),
        max_gt_instances=cfg.max_gt_instances,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        seed=cfg.get("seed", 0),
        _convert_="object",
    )
