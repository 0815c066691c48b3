"""Run-time choice between the two implementations of the same network math.

``reference`` is the plain transcription of the official code (SPEC A2): explicit ``softmax(Q K^T) V``, window
partition by pad/roll/reshape, shift masks built on every forward, contiguous NCHW features; it is also the path
that exports to ONNX.
``fast`` (the default) computes the same math with cached window indices and shift masks, fused
``scaled_dot_product_attention`` for the Swin window attention where it is faster, query chunking for the
global semantic attention (memory linear in the number of pixels), channels-last decoder features (views of the
NHWC tokens), one x2 upsampling for the summed stride-8/16/32 FPN heads, and at inference oneDNN linear/conv
kernels (:mod:`semask.layers.onednn`), fused training losses (:mod:`semask.losses.pixel_ce`,
:mod:`semask.losses.mask_losses`), a mask-product backward over the matched queries only
(:mod:`semask.layers.mask_product`), Winograd 3x3 convolutions in float32 on CPU
(:mod:`semask.layers.winograd`), and a shift-mask fill of -1e4 for the official -100 (no denormal attention
weights, see :mod:`semask.layers.window_attention`). Only kernel functions read the choice, at call time, so it can
be switched on a built model; it computes the official values to float precision (Winograd to ~1e-5 of the output
range, direct convolutions ~2e-6; the prior decoder and the mask heads' intermediate predictions are skipped at
inference by explicit arguments, ``Segmenter.forward(priors=False, aux=False)``). The setting is process-wide (not per thread).
"""

import contextlib
from collections.abc import Iterator

IMPLS = ("fast", "reference")
_current = "fast"


def get_impl() -> str:
    """The implementation the attention layers use now: ``"fast"`` or ``"reference"``."""
    return _current


def set_impl(name: str) -> None:
    """Select the attention implementation for every following forward pass.

    Args:
        name: ``"fast"`` or ``"reference"``.

    Raises:
        ValueError: unknown name.
    """
    global _current
    if name not in IMPLS:
        raise ValueError(f"unknown attention implementation {name!r}; choose from {IMPLS}")
    _current = name


@contextlib.contextmanager
def use_impl(name: str) -> Iterator[None]:
    """Context manager: ``with semask.use_impl("reference"): ...`` restores the previous choice on exit.

    Raises:
        ValueError: unknown name.
    """
    previous = get_impl()
    set_impl(name)
    try:
        yield
    finally:
        set_impl(previous)
