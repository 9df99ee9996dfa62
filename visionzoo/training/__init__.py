"""Lightning training on timm's building blocks (needs the ``[train]`` extra: lightning, jsonargparse, torchvision)."""
from .data import ImageDataModule, write_digits_folder
from .module import ClassificationModule

__all__ = ["ClassificationModule", "ImageDataModule", "write_digits_folder"]
