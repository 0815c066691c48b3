"""Small test and demo models (not in the paper): ``*_test_*`` (tiny widths, for unit tests) and ``*_nano_*``
(the CamVid CPU presets and the README demo)."""

from typing import Any

from semask.models.segmenter import Segmenter
from semask.models.zoo import make_swin_fpn, make_swin_mask
from semask.registry import register_model

TEST = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=7, sem_window_size=7)
NANO = dict(embed_dim=48, depths=(2, 2, 2, 2), num_heads=(2, 3, 6, 12), window_size=7, sem_window_size=7)

# small widths, few queries and layers. conv_dim 64: the GroupNorm(32) layers need 2 channels per group to
# normalise the 1x1 stride-32 map of inputs up to 32x32 pixels (1x1 included)
TEST_HEAD: dict[str, Any] = dict(
    conv_dim=64, mask_dim=32, hidden_dim=32, num_queries=8, nheads=4, dim_feedforward=64, enc_layers=2,
    enc_dim_feedforward=64,
)  # fmt: skip


def _test_mask(arch: str, decoder: str, fields: dict[str, Any]) -> Segmenter:
    head = TEST_HEAD | {"dec_layers": 3 if decoder == "maskformer" else 4}
    return make_swin_mask(arch, TEST | head, decoder, fields)


@register_model
def semask_swin_test_fpn(**fields) -> Segmenter:
    """SeMask-Swin-test Semantic-FPN (unit tests)."""
    return make_swin_fpn("semask_swin_test_fpn", TEST | {"decoder_channels": 32}, True, fields)


@register_model
def swin_test_fpn(**fields) -> Segmenter:
    """Swin-test Semantic-FPN without semantic layers."""
    return make_swin_fpn("swin_test_fpn", TEST | {"decoder_channels": 32}, False, fields)


@register_model
def semask_swin_nano_fpn(**fields) -> Segmenter:
    """SeMask-Swin-nano Semantic-FPN (CamVid CPU presets, README demo)."""
    return make_swin_fpn("semask_swin_nano_fpn", NANO | {"decoder_channels": 64}, True, fields)


@register_model
def swin_nano_fpn(**fields) -> Segmenter:
    """Swin-nano Semantic-FPN without semantic layers."""
    return make_swin_fpn("swin_nano_fpn", NANO | {"decoder_channels": 64}, False, fields)


@register_model
def semask_swin_test_m2f(**fields) -> Segmenter:
    """SeMask-Swin-test Mask2Former (unit tests)."""
    return _test_mask("semask_swin_test_m2f", "mask2former", fields)


@register_model
def semask_swin_test_maskformer(**fields) -> Segmenter:
    """SeMask-Swin-test MaskFormer (unit tests)."""
    return _test_mask("semask_swin_test_maskformer", "maskformer", fields)


@register_model
def semask_swin_test_fapn_m2f(**fields) -> Segmenter:
    """SeMask-Swin-test FaPN Mask2Former (unit tests)."""
    return _test_mask("semask_swin_test_fapn_m2f", "fapn_m2f", fields)


@register_model
def semask_swin_test_msfapn_m2f(**fields) -> Segmenter:
    """SeMask-Swin-test MSFaPN Mask2Former (unit tests)."""
    return _test_mask("semask_swin_test_msfapn_m2f", "msfapn_m2f", fields)
