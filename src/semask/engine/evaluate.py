"""Evaluation: whole/slide inference (+ ms+flip TTA) over a dataset -> aAcc / mIoU / mAcc (SPEC A5).

Each raw uint8 image goes through the official test pipeline of the model's family
(:func:`semask.engine.inference.predict_labels`), and the scores follow the official evaluator named by
``metric`` (:mod:`semask.metrics`). DDP-aware: each rank evaluates every world-th image; the histograms are summed
across ranks.
With a :class:`~semask.engine.distributed.StopFlag` (training), a signal cuts the current image short and the
processes agree after every image, so a stop reaches all of them within one image.
"""

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from semask.engine.distributed import Interrupted, StopFlag, agree
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
    stop: StopFlag | None = None,
) -> dict:
    """Run inference on every image of ``dataset`` (items with raw ``image`` (H, W, 3) uint8 and ``label``
    (H, W) uint8, i.e. built with ``transform=None``) and score it at its original size.

    Args:
        model: a segmenter; it is moved to ``device``, where its inputs go.
        metric: ``mmseg`` or ``detectron2`` semantics (:class:`semask.metrics.SegMetrics`).
        stop: the training's signal flag: a SIGINT/SIGTERM to any process stops every process after its current
            image (or at once, when the image stalls).

    Returns:
        ``SegMetrics.compute()``: aAcc, mIoU, mAcc (percent), per-class IoU / Acc and the ``metric`` used.

    Raises:
        Interrupted: ``stop`` saw a signal (on every process).
        ValueError: an unknown ``metric``.
        ConfigError: an invalid ``cfg`` (e.g. a slide stride larger than the crop).
    """
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    metrics = SegMetrics(num_classes, metric=metric)
    cfg.validate()
    was_training = model.training
    model.to(device).eval()
    rounds = -(-len(dataset) // world)  # every process takes part in each round's agreement
    try:
        for i in tqdm(
            range(rank, rounds * world, world), desc="eval", disable=not progress or rank, leave=False
        ):
            if i < len(dataset):
                (stop.interruptible if stop else _call)(_score, model, dataset, i, cfg, metrics)
            if stop is not None and (signum := agree([stop.signal or 0], device)[0]):
                raise Interrupted(f"stopped by {StopFlag.name(signum)} during evaluation")
    finally:
        model.train(was_training)
    metrics.all_reduce()
    return metrics.compute()


def _call(fn, *args):
    """``fn(*args)`` (evaluation without a stop flag)."""
    return fn(*args)


def _score(model: nn.Module, dataset, i: int, cfg: InferenceCfg, metrics: SegMetrics) -> None:
    """Add image ``i``'s prediction to ``metrics``."""
    item = dataset[i]
    labels = predict_labels(model, item["image"], cfg)
    metrics.update(labels[0].cpu(), torch.from_numpy(item["label"]).long())
