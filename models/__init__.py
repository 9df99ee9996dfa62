"""Model families; importing this package registers every ``vz_*`` model with timm."""
from . import maxvit  # noqa: F401
