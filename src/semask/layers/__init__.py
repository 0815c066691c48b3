"""Building blocks shared by the backbones and decoders (no registry; composed in Python)."""
