"""Bad data and misconfigured recipes fail before training starts, with a message that says what to change."""
from __future__ import annotations

import os
import shutil

import pytest

from visionzoo.training import ImageDataModule
from visionzoo.training.cli import main
from visionzoo.training.data import CheckedImages

from .conftest import TINY, column, metrics


@pytest.fixture
def small_folder(digits_root, tmp_path):
    """Two classes, 8 train and 4 val images each, copied from the digits folder."""
    root = tmp_path / "small"
    for split, n in (("train", 8), ("val", 4)):
        for cls in ("0", "1"):
            src = os.path.join(digits_root, split, cls)
            os.makedirs(root / split / cls)
            for name in sorted(os.listdir(src))[:n]:
                shutil.copy(os.path.join(src, name), root / split / cls / name)
    return root


def _corrupt(path) -> None:
    with open(path, "r+b") as f:  # keep the PNG header, truncate the pixel data
        f.truncate(60)


def _fit(*args, root):
    return main(["fit", "--config", TINY, "--data.root", str(root), "--trainer.max_epochs", "1", *args])


def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"dataset root not found: {missing}.*<root>/train/<class>/<image>"):
        _fit("--trainer.default_root_dir", str(tmp_path), root=missing)
    assert not (tmp_path / "checkpoints").exists()


def test_missing_split_and_empty_class(small_folder):
    os.makedirs(small_folder / "train" / "7")
    with pytest.raises(ValueError, match=f"class folder {small_folder / 'train' / '7'} holds no images"):
        ImageDataModule(root=str(small_folder)).check()
    os.rmdir(small_folder / "train" / "7")
    shutil.rmtree(small_folder / "val")
    with pytest.raises(FileNotFoundError, match=f"split folder not found: {small_folder / 'val'}"):
        ImageDataModule(root=str(small_folder)).check()


def test_val_class_missing_from_train(small_folder):
    shutil.copytree(small_folder / "val" / "1", small_folder / "val" / "9")
    with pytest.raises(ValueError, match="classes the train split lacks: \\['9'\\]"):
        ImageDataModule(root=str(small_folder)).check()


def test_corrupted_image_stops_the_run_by_default(small_folder, tmp_path):
    bad = small_folder / "train" / "1" / sorted(os.listdir(small_folder / "train" / "1"))[0]
    _corrupt(bad)
    with pytest.raises(RuntimeError, match=f"cannot read image {bad}.*data.bad_images: skip"):
        _fit("--model.num_classes", "2", "--data.batch_size", "4", "--trainer.default_root_dir", str(tmp_path),
             root=small_folder)


def test_corrupted_images_skipped_and_counted(small_folder, tmp_path):
    for split in ("train", "val"):
        folder = small_folder / split / "0"
        _corrupt(folder / sorted(os.listdir(folder))[-1])
    dm = ImageDataModule(root=str(small_folder), bad_images="skip")
    dm.check()
    data = CheckedImages(dm._dataset("train", lambda img: img, False).dataset, lambda img: img.size, "skip")
    with pytest.warns(UserWarning, match="skipped unreadable image .*train/0/"):
        _, _, bad = data[7]  # the corrupted one: the next sample is returned in its place
    assert bad == 1 and data[0][2] == 0

    run = tmp_path / "run"
    _fit("--model.num_classes", "2", "--data.batch_size", "4", "--data.val_batch_size", "4",
         "--data.bad_images", "skip", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
         "--trainer.default_root_dir", str(run), root=small_folder)
    rows = metrics(str(run))
    assert list(column(rows, "train/bad_images").values()) == [1.0]  # 16 images, one epoch: each read once
    assert list(column(rows, "val/bad_images").values()) == [1.0]


@pytest.mark.parametrize("args, error, match", [
    (["--model.mixup", "0.8", "--data.batch_size", "15"], ValueError,
     "Mixup/CutMix needs an even per-device batch, data.batch_size is 15: set it to 16 or 14"),
    (["--model.model_name", "vz_maxvit_tinny"], ValueError,
     "'vz_maxvit_tinny' is not a registered timm model; did you mean one of \\['vz_maxvit_tiny'"),
    (["--model.num_classes", "1000"], ValueError,
     "model.num_classes is 1000 but the data at .* has 10 class folders: set --model.num_classes 10"),
], ids=["mixup-odd-batch", "unknown-model", "num-classes"])
def test_misconfigured_recipe(args, error, match, digits_root, tmp_path):
    with pytest.raises(error, match=match):
        _fit(*args, "--trainer.default_root_dir", str(tmp_path), root=digits_root)
    assert not (tmp_path / "checkpoints").exists()  # nothing was trained


def test_digits_folder_layout(digits_root):
    """The quickstart's data: an ImageNet-style folder, a stratified 80/20 split of sklearn's 1797 digits."""
    from PIL import Image

    counts = {split: {c: len(os.listdir(os.path.join(digits_root, split, c))) for c in map(str, range(10))}
              for split in ("train", "val")}
    assert sum(counts["train"].values()) == 1437 and sum(counts["val"].values()) == 360
    assert min(counts["val"].values()) >= 35  # every class held out
    first = os.path.join(digits_root, "val", "3", sorted(os.listdir(os.path.join(digits_root, "val", "3")))[0])
    with Image.open(first) as img:
        assert img.format == "PNG" and img.size == (32, 32)


def test_pretrained_file_with_another_classifier(digits_root, tmp_path):
    import timm
    import torch
    import yaml
    from safetensors.torch import save_file

    from visionzoo.training import ClassificationModule

    with open(TINY) as f:
        kwargs = yaml.safe_load(f)["model"]["model_kwargs"]
    weights = str(tmp_path / "seven_classes.safetensors")
    source = timm.create_model("vz_maxvit_tiny", num_classes=7, **kwargs)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, weights)
    with pytest.raises(ValueError, match="seven_classes.safetensors does not fit model.num_classes=10 .*"
                                         "model.reset_classifier: true"):
        _fit("--model.pretrained_file", weights, "--trainer.default_root_dir", str(tmp_path), root=digits_root)
    module = ClassificationModule("vz_maxvit_tiny", num_classes=10, model_kwargs=kwargs, pretrained_file=weights,
                                  reset_classifier=True)
    assert torch.equal(module.model.stem.conv1.weight, source.stem.conv1.weight)  # backbone loaded, new head
    assert module.model.head.fc.out_features == 10


def test_validate_a_folder_without_train_split(small_folder, tmp_path):
    """Evaluating weights needs only the evaluated split (e.g. ImageNet's val/)."""
    shutil.rmtree(small_folder / "train")
    main(["validate", "--config", TINY, "--data.root", str(small_folder), "--model.num_classes", "2",
          "--trainer.default_root_dir", str(tmp_path)])
    assert list(column(metrics(str(tmp_path)), "val/images").values()) == [8.0]
