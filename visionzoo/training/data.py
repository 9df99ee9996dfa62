"""Data for training: timm's datasets and transforms behind a LightningDataModule.

Image folders (ImageNet layout ``root/<split>/<class>/<image>``) are checked before training: a missing root or split,
an empty class folder and a class missing from the train split each stop the run with a message naming the path.
Images that cannot be decoded are named and either stop the run (``bad_images: raise``) or are replaced by the next
readable sample and counted (``bad_images: skip``; the count is logged as ``train/bad_images`` / ``val/bad_images``).
Other timm datasets (``hfds/...``, ``wds/...``, ``tfds/...``) go through ``timm.data.create_dataset`` unchanged.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Literal, Optional, Tuple

import lightning as L
import numpy as np
import torch
from PIL import Image
from timm.data import create_dataset, create_transform, resolve_data_config
from timm.data.readers.img_extensions import get_img_extensions
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["ImageDataModule", "write_digits_folder", "folder_classes"]


def write_digits_folder(root: str, size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> None:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes) as an ImageNet-style folder of PNGs:
    ``root/train/<digit>/<n>.png`` and ``root/val/<digit>/<n>.png``, a stratified held-out split. Written once:
    a temporary folder is renamed into place, so an interrupted write never leaves a half dataset at ``root``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # values 0..16 -> 0..255
    idx_train, idx_val = train_test_split(np.arange(len(images)), test_size=val_fraction, random_state=seed,
                                          stratify=digits.target)
    tmp = f"{root.rstrip(os.sep)}.tmp-{os.getpid()}"
    for split, indices in (("train", idx_train), ("val", idx_val)):
        for i in indices:
            folder = os.path.join(tmp, split, str(digits.target[i]))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(images[i]).resize((size, size), Image.BICUBIC).save(
                os.path.join(folder, f"{i:04d}.png"))
    os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
    os.rename(tmp, root)


def folder_classes(split_dir: str) -> List[str]:
    """The class folders of one split, checked: each must hold at least one image (timm would silently drop an
    empty one and shift every later class index)."""
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(
            f"dataset split folder not found: {split_dir}. Expected the ImageNet layout "
            f"<root>/<split>/<class>/<image>, e.g. <root>/train/n01440764/x.JPEG (set data.root, data.train_split / data.val_split)")
    extensions = get_img_extensions(as_set=True)
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise ValueError(f"no class folders in {split_dir}: expected <split>/<class>/<image> sub-folders")
    for name in classes:
        found = any(os.path.splitext(f)[1].lower() in extensions
                    for _, _, files in os.walk(os.path.join(split_dir, name)) for f in files)
        if not found:
            raise ValueError(f"class folder {os.path.join(split_dir, name)} holds no images "
                             f"(extensions {', '.join(sorted(extensions))}): add images or remove the folder")
    return classes


class CheckedImages(Dataset):
    """A timm map-style dataset whose images are decoded here, so that a file that fails is named and handled by
    policy. Returns ``(image, target, bad)``, ``bad`` the number of unreadable files skipped to reach this sample."""

    def __init__(self, dataset, transform, bad_images: str):
        self.dataset, self.transform, self.bad_images = dataset, transform, bad_images

    def __len__(self) -> int:
        return len(self.dataset)

    def _load(self, index: int) -> Tuple[Image.Image, int]:
        source, target = self.dataset.reader[index][:2]
        if isinstance(source, Image.Image):
            return source.convert("RGB"), target
        with (source if hasattr(source, "read") else open(source, "rb")) as f:
            with Image.open(f) as img:
                return img.convert("RGB"), target  # convert() decodes every pixel: truncated files fail here

    def __getitem__(self, index: int):
        for bad in range(len(self)):
            i = (index + bad) % len(self)
            try:
                img, target = self._load(i)
                break
            except Exception as e:  # PIL raises OSError, SyntaxError, ValueError ... depending on the format
                path = self.dataset.filename(i, absolute=True)
                if self.bad_images == "raise":
                    raise RuntimeError(f"cannot read image {path}: {type(e).__name__}: {e}. Fix or delete the file, "
                                       f"or set data.bad_images: skip to skip and count unreadable images") from e
                warnings.warn(f"skipped unreadable image {path} ({type(e).__name__}: {e})", stacklevel=2)
        else:
            raise RuntimeError(f"no readable image in {self.dataset.reader.root}")
        return self.transform(img), target, bad


class EpochShuffle(Sampler):
    """A permutation drawn from (seed, epoch) alone, as DistributedSampler does (Lightning calls ``set_epoch``).
    The order then does not depend on the global RNG at the time the loader is iterated: Lightning creates the first
    iterator before a checkpoint is restored, so a global-RNG shuffle would differ between a resumed run and an
    uninterrupted one."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.size, generator=generator).tolist()

    def __len__(self) -> int:
        return self.size


class ImageDataModule(L.LightningDataModule):
    """ImageNet-style classification data with timm's transforms.

    Args:
        root: dataset root; for folders, ``root/<train_split>/<class>/<image>`` and ``root/<val_split>/...``.
        dataset: timm dataset name: ``""`` (image folder), ``hfds/<name>``, ``wds/<name>``, ``tfds/<name>``.
        builtin: ``"digits"`` writes scikit-learn's digits as an image folder at ``root`` if it is missing (quickstart).
        batch_size: per device; the global batch is batch_size x devices x nodes x accumulate_grad_batches.
        input_size: training and eval image size; None takes the model's pretrained_cfg input size.
        auto_augment: timm policy string, e.g. ``rand-m15-n2-mstd0.5`` (RandAugment); None for none.
        re_prob, re_mode, re_count: random erasing (probability, ``pixel`` / ``const`` / ``rand``, count).
        crop_pct, crop_mode, eval_interpolation: eval transform overrides; None takes the model's pretrained_cfg.
        bad_images: an unreadable image stops the run (``raise``) or is skipped and counted (``skip``).
    """

    def __init__(
            self,
            root: Optional[str] = None,
            dataset: str = "",
            builtin: Optional[Literal["digits"]] = None,
            train_split: str = "train",
            val_split: str = "val",
            test_split: Optional[str] = None,
            batch_size: int = 128,
            val_batch_size: Optional[int] = None,
            num_workers: int = 4,
            pin_memory: bool = True,
            input_size: Optional[int] = None,
            scale: Tuple[float, float] = (0.08, 1.0),
            ratio: Tuple[float, float] = (3 / 4, 4 / 3),
            hflip: float = 0.5,
            color_jitter: float = 0.4,
            auto_augment: Optional[str] = "rand-m9-mstd0.5-inc1",
            train_interpolation: str = "random",
            re_prob: float = 0.0,
            re_mode: str = "pixel",
            re_count: int = 1,
            crop_pct: Optional[float] = None,
            crop_mode: Optional[str] = None,
            eval_interpolation: Optional[str] = None,
            bad_images: Literal["raise", "skip"] = "raise",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.root, self.dataset, self.builtin = root, dataset, builtin
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.classes: Optional[List[str]] = None
        self.data_config: Dict[str, Any] = {}
        self.train_set = self.val_set = self.test_set = None

    @property
    def is_folder(self) -> bool:
        return self.dataset in ("", "folder", "imagefolder")

    def prepare_data(self) -> None:  # rank 0 only
        if self.builtin == "digits" and self.root and not os.path.exists(self.root):
            print(f"writing scikit-learn's digits as an image folder to {os.path.abspath(self.root)}")
            write_digits_folder(self.root)

    def check(self, stage: str = "fit") -> None:
        """Checks that need no model: the dataset root and, for folders, the class folders of the splits in use.
        Class indices follow the train split's sorted folders; evaluation without a train folder (e.g. ImageNet's
        val only) takes them from the evaluated split."""
        hp = self.hparams
        if not self.root and self.is_folder:
            raise ValueError("data.root is not set: pass --data.root <dataset folder> (ImageNet layout "
                             "<root>/train/<class>/<image>, <root>/val/<class>/<image>)")
        if not self.is_folder or self.classes is not None:
            return
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"dataset root not found: {self.root}. Expected the ImageNet layout "
                                    f"<root>/{hp.train_split}/<class>/<image> and <root>/{hp.val_split}/<class>/<image>")
        eval_splits = {hp.val_split} if stage in ("fit", "validate") else {hp.test_split or hp.val_split}
        train_dir = os.path.join(self.root, hp.train_split)
        classes = folder_classes(train_dir) if stage == "fit" or os.path.isdir(train_dir) else None
        for split in sorted(eval_splits):
            found = folder_classes(os.path.join(self.root, split))
            extra = set(found) - set(classes or found)
            if extra:
                raise ValueError(f"{os.path.join(self.root, split)} has classes the train split lacks: "
                                 f"{sorted(extra)[:5]}; every class needs a folder in {hp.train_split}/")
            classes = classes or found
        self.classes = classes

    @property
    def num_classes(self) -> Optional[int]:
        return len(self.classes) if self.classes is not None else None

    def transforms(self, model: torch.nn.Module):
        """(train, eval) transforms; eval takes crop, interpolation, mean and std from the model's pretrained_cfg."""
        hp = self.hparams
        args = dict(img_size=hp.input_size, crop_pct=hp.crop_pct, crop_mode=hp.crop_mode,
                    interpolation=hp.eval_interpolation)
        self.data_config = resolve_data_config({k: v for k, v in args.items() if v is not None}, model=model)
        cfg = self.data_config
        train = create_transform(
            cfg["input_size"], is_training=True, scale=hp.scale, ratio=hp.ratio, hflip=hp.hflip,
            color_jitter=hp.color_jitter, auto_augment=hp.auto_augment, interpolation=hp.train_interpolation,
            mean=cfg["mean"], std=cfg["std"], re_prob=hp.re_prob, re_mode=hp.re_mode, re_count=hp.re_count)
        evaluate = create_transform(**cfg)
        return train, evaluate

    def _dataset(self, split: str, transform, training: bool):
        hp = self.hparams
        if self.is_folder:
            class_map = {name: i for i, name in enumerate(self.classes)}
            base = create_dataset("", root=os.path.join(self.root, split), split=split, search_split=False,
                                  class_map=class_map)
            return CheckedImages(base, transform, hp.bad_images)
        return create_dataset(self.dataset, root=self.root, split=split, is_training=training,
                              batch_size=self.batch_size, transform=transform)

    def setup(self, stage: str) -> None:
        self.check(stage)
        model = self.trainer.lightning_module.model
        train_tf, eval_tf = self.transforms(model)
        if stage == "fit":
            self.train_set = self._dataset(self.hparams.train_split, train_tf, training=True)
        if stage in ("fit", "validate"):
            self.val_set = self._dataset(self.hparams.val_split, eval_tf, training=False)
        if stage in ("test", "predict"):
            self.test_set = self._dataset(self.hparams.test_split or self.hparams.val_split, eval_tf, training=False)

    def _loader(self, dataset, batch_size: int, training: bool) -> DataLoader:
        shuffle = training and not isinstance(dataset, torch.utils.data.IterableDataset)
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # set by seed_everything
        sampler = None
        if shuffle and self.trainer is not None and self.trainer.world_size == 1:
            sampler, shuffle = EpochShuffle(len(dataset), seed), False
        # else with several processes Lightning replaces shuffle=True by a DistributedSampler, itself seed + epoch
        # own generator: creating an iterator draws the workers' base seed, which must not move the global RNG.
        # drop_last: full training batches only (Mixup needs an even batch)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                          generator=torch.Generator().manual_seed(seed), drop_last=training,
                          num_workers=self.num_workers,
                          pin_memory=self.hparams.pin_memory and torch.cuda.is_available(),
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, training=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, training=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.val_batch_size, training=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
