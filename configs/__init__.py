"""The shipped configs, installed as the package ``visionzoo.configs`` (pyproject's package-dir mapping): the
ImageNet recipes (``imagenet/*.yaml``), ``quickstart.yaml`` and the mmdet / mmseg configs, as package data.

Nothing here is imported as code; ``visionzoo.recipes`` finds the files by name.
"""
