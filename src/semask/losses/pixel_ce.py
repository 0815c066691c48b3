"""Per-pixel cross-entropy of logits bilinearly upsampled to the label: mmseg's decode-head loss (SPEC A1
'Losses'; ``mmseg/models/decode_heads/decode_head.py::losses`` with ``CrossEntropyLoss``), in the official ops
(``reference``) and in the ``fast`` form (channels-last upsampling, one softmax pass over contiguous classes).
"""

import torch
import torch.nn.functional as F

from semask.layers.impl import get_impl


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """(N, K) logits, (N,) targets -> (N,) ``-weight[t] * log_softmax(x)[t]`` (0 where t is ignored).

    Same values and gradients as ``F.cross_entropy(..., reduction="none")``; the backward writes
    ``softmax * g`` in one pass and subtracts ``g`` at the targets, where autograd's NLL backward first fills an
    (N, K) zero tensor and then runs the generic log-softmax backward.
    """

    @staticmethod
    def forward(ctx, logits, target, ignore_index, class_weight):  # type: ignore[override]
        log_prob = logits.log_softmax(1)
        valid = target != ignore_index
        safe = target.where(valid, 0)[:, None]  # (N, 1)
        weight = valid.to(logits.dtype)
        if class_weight is not None:
            weight = weight * class_weight[safe[:, 0]]
        ctx.save_for_backward(log_prob, safe, weight)
        return -log_prob.gather(1, safe)[:, 0] * weight

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        log_prob, safe, weight = ctx.saved_tensors
        scale = (grad * weight)[:, None]  # (N, 1)
        grad_logits = log_prob.exp().mul_(scale)
        return grad_logits.scatter_add_(1, safe, -scale), None, None, None


def upsampled_pixel_ce(
    logits: torch.Tensor, label: torch.Tensor, ignore_index: int, class_weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of ``logits`` resized (bilinear, align_corners=False) to the label's size, per pixel.

    Args:
        logits: (B, K, h, w) float logits.
        label: (B, H, W) int64 class indices, ``ignore_index`` for void.
        ignore_index: label value whose pixels get loss 0 (and no gradient).
        class_weight: optional (K,) weights: each pixel's loss times ``class_weight[label]``.

    Returns:
        (B, H, W) per-pixel loss and the (B, K, H, W) upsampled logits (channels-last memory in ``fast``; for
        the accuracy, which the official head reports from them).
    """
    size = label.shape[-2:]
    if get_impl() == "reference":
        up = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(up, label, weight=class_weight, ignore_index=ignore_index, reduction="none")
        return loss, up
    nhwc = logits.float().contiguous(memory_format=torch.channels_last)
    up = F.interpolate(nhwc, size=size, mode="bilinear", align_corners=False)
    flat = up.permute(0, 2, 3, 1).reshape(-1, up.shape[1])  # (B*H*W, K), a view of the channels-last memory
    loss = _SoftmaxCrossEntropy.apply(flat, label.reshape(-1), ignore_index, class_weight)
    return loss.view(label.shape), up
