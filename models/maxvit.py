"""MaxViT (in progress)."""
