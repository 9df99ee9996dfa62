"""visionzoo: efficient-attention vision backbones for timm, Lightning and mmdet/mmseg.

Importing this package registers every ``vz_*`` model with timm.
"""
__version__ = "0.1.0"

from . import models  # noqa: E402,F401  (registers the models with timm)
