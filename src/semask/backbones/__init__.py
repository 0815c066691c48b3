"""Hierarchical backbones returning multi-scale features and semantic-prior maps."""
