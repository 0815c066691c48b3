"""Evaluation: whole/slide inference (+ ms+flip TTA) over a dataset -> aAcc / mIoU / mAcc (SPEC A5).

DDP-aware: each rank evaluates every world-th image; the histograms are summed across ranks.
"""

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from semask.engine.inference import InferenceCfg, normalize_image, predict_labels
from semask.metrics import SegMetrics


def evaluate(
    model: nn.Module,
    dataset,
    num_classes: int,
    cfg: InferenceCfg,
    device: torch.device,
    progress: bool = True,
) -> dict:
    """Run inference on every image of ``dataset`` (items with raw ``image`` (H, W, 3) uint8 and ``label``
    (H, W) uint8, i.e. built with ``transform=None``) at its original size.

    Returns:
        ``SegMetrics.compute()``: aAcc, mIoU, mAcc (percent) and per-class IoU / Acc.
    """
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    metrics = SegMetrics(num_classes)
    was_training = model.training
    model.eval()
    indices = range(rank, len(dataset), world)
    for i in tqdm(indices, desc="eval", disable=not progress or rank != 0, leave=False):
        item = dataset[i]
        labels = predict_labels(model, normalize_image(item["image"], device), cfg)
        metrics.update(labels[0].cpu(), torch.from_numpy(item["label"]).long())
    metrics.all_reduce()
    model.train(was_training)
    return metrics.compute()
