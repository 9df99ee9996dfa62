"""visionzoo training entry point (Lightning CLI).

Training lands with the training issue: `python train.py fit --config configs/imagenet/<model>.yaml --data.root <dir>`.
Until then this script only says so.
"""
import sys


def main() -> int:
    print(__doc__.strip())
    return 0 if len(sys.argv) == 1 or sys.argv[1] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
