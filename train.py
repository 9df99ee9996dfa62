"""visionzoo training entry point: Lightning's CLI over visionzoo.training.

    python train.py fit --config configs/quickstart.yaml
    python train.py fit --config configs/imagenet/vz_maxvit_tiny.yaml --data.root /data/imagenet
    python train.py fit --config vz_maxvit_tiny --data.root /data/imagenet   # a shipped recipe by name
    python train.py fit --config ... --ckpt_path last            # resume
    python train.py validate --config ... --ckpt_path PATH       # evaluate a checkpoint
    python train.py fit --print_config                           # every option with its default

Installed without a checkout, `visionzoo train ...` is the same command (the recipes ship with the package).
"""
import visionzoo  # noqa: F401  (registers the vz_* models with timm)
from visionzoo.training.cli import main

if __name__ == "__main__":
    main()
