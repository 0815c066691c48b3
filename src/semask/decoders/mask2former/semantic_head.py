"""SeMask prior decoder of the detectron2 projects and Mask2Former semantic inference (SPEC A7 'SemanticHead',
'Semantic inference', 'Padding at inference').

Official sources: SeMask ``SemanticHead`` (``sem_head``, parameter-free, align_corners=True everywhere) and
``SeMaskMaskFormer.semantic_inference`` + detectron2 ``sem_seg_postprocess``.
"""

import torch
import torch.nn.functional as F


def _resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def decode_priors(semantic_maps: list[torch.Tensor]) -> torch.Tensor:
    """Sum of the four stage priors at stride 4, then x4 to the input size (all bilinear, align_corners=True).

    Stage s (s = 1, 2, 3 for strides 8, 16, 32) goes through s separate x2 upsamplings (official
    ``nn.Upsample(scale_factor=2)`` chain, not one resize), then is resized to stage 0's size (an identity for
    inputs padded to 32) and added.

    Args:
        semantic_maps: 4 x (B, K, h_s, w_s) prior logits, strides 4, 8, 16, 32.

    Returns:
        (B, K, 4*h_0, 4*w_0) prior logits.
    """
    y = semantic_maps[0]
    size = tuple(y.shape[-2:])
    for s, m in enumerate(semantic_maps[1:], start=1):
        for _ in range(s):
            m = _resize(m, (2 * m.shape[-2], 2 * m.shape[-1]), align_corners=True)
        y = y + _resize(m, size, align_corners=True)
    return _resize(y, (4 * size[0], 4 * size[1]), align_corners=True)


def semantic_inference(
    pred_logits: torch.Tensor, pred_masks: torch.Tensor, image_size: tuple[int, int]
) -> torch.Tensor:
    """Per-class scores: softmax over K+1 classes without "no object", times sigmoid masks, summed over queries.

    Masks are upsampled to the padded input size (4x the mask size) BEFORE the einsum, then cropped to
    ``image_size`` (the official resize to the original size is an identity here).

    Args:
        pred_logits: (B, Q, K+1); pred_masks: (B, Q, Hp/4, Wp/4); image_size: (H, W) unpadded.

    Returns:
        (B, K, H, W) scores in [0, Q].
    """
    padded = (4 * pred_masks.shape[-2], 4 * pred_masks.shape[-1])
    masks = _resize(pred_masks, padded, align_corners=False).sigmoid()  # (B, Q, Hp, Wp)
    probs = pred_logits.softmax(-1)[..., :-1]  # (B, Q, K)
    scores = torch.einsum("bqc,bqhw->bchw", probs, masks)  # (B, K, Hp, Wp)
    return scores[..., : image_size[0], : image_size[1]]
