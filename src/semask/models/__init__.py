"""Whole segmentation models and their registry entrypoints."""
