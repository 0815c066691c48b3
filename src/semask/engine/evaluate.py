"""Evaluation: whole/slide inference (+ ms+flip TTA) over a dataset -> aAcc / mIoU / mAcc (SPEC A5).

Each raw uint8 image goes through the official test pipeline of the model's family
(:func:`semask.engine.inference.predict_labels`), and the scores follow the official evaluator named by
``metric`` (:mod:`semask.metrics`). DDP-aware: each rank evaluates every world-th image; the histograms are summed
across ranks.
"""

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from semask.engine.inference import InferenceCfg, predict_labels
from semask.metrics import SegMetrics


def evaluate(
    model: nn.Module,
    dataset,
    num_classes: int,
    cfg: InferenceCfg,
    device: torch.device,
    progress: bool = True,
    metric: str = "mmseg",
) -> dict:
    """Run inference on every image of ``dataset`` (items with raw ``image`` (H, W, 3) uint8 and ``label``
    (H, W) uint8, i.e. built with ``transform=None``) and score it at its original size.

    Args:
        model: a segmenter; it is moved to ``device``, where its inputs go.
        metric: ``mmseg`` or ``detectron2`` semantics (:class:`semask.metrics.SegMetrics`).

    Returns:
        ``SegMetrics.compute()``: aAcc, mIoU, mAcc (percent), per-class IoU / Acc and the ``metric`` used.

    Raises:
        ValueError: an unknown ``metric``.
        ConfigError: an invalid ``cfg`` (e.g. a slide stride larger than the crop).
    """
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    metrics = SegMetrics(num_classes, metric=metric)
    cfg.validate()
    was_training = model.training
    model.to(device).eval()
    indices = range(rank, len(dataset), world)
    for i in tqdm(indices, desc="eval", disable=not progress or rank != 0, leave=False):
        item = dataset[i]
        labels = predict_labels(model, item["image"], cfg)
        metrics.update(labels[0].cpu(), torch.from_numpy(item["label"]).long())
    metrics.all_reduce()
    model.train(was_training)
    return metrics.compute()
