"""Decoders: consume backbone features (and priors) and produce per-pixel class logits."""
