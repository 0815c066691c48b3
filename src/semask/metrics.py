"""Segmentation metrics (SPEC A5): aAcc, mIoU, mAcc, with the semantics of either official evaluator.

Per class k, over all pixels whose label is not ``ignore_index``: intersection I_k (pred = label = k), prediction
area P_k, label area L_k and union U_k = P_k + L_k - I_k. Then aAcc = sum(I) / sum(L), IoU_k = I_k / U_k,
Acc_k = I_k / L_k, and mIoU / mAcc are their NaN-skipping means; a class never labelled gets Acc NaN. The two
``METRICS`` differ only for a class never labelled in the whole set:

- ``mmseg`` (mmseg 0.11 ``mean_iou`` via ``CustomDataset.evaluate``, the SeMask-FPN numbers): its IoU is
  0 / P_k, i.e. 0 when it is predicted somewhere (pulling mIoU down), NaN only when it is never predicted either.
- ``detectron2`` (detectron2 ``SemSegEvaluator.evaluate``, the Mask2Former / MaskFormer / FaPN numbers): its IoU
  is NaN (``iou_valid = pos_gt > 0 & union > 0``), so it is left out of mIoU whatever was predicted.
"""

import math
import typing

import torch
import torch.distributed as dist

_AREAS = ("intersect", "union", "pred", "label")
Metric = typing.Literal["mmseg", "detectron2"]
"""Metric semantics: the official evaluator reproduced (see the module docstring)."""
METRICS: tuple[str, ...] = typing.get_args(Metric)


class SegMetrics:
    """Accumulates per-class pixel histograms over batches (float64, CPU) and reduces them across ranks.

    Args:
        num_classes: K.
        ignore_index: label value whose pixels are skipped.
        metric: ``mmseg`` or ``detectron2`` (see :data:`METRICS` and the module docstring).

    Raises:
        ValueError: ``num_classes`` not positive, or an unknown ``metric``.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, metric: str = "mmseg") -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.metric = metric
        self.areas = torch.zeros(len(_AREAS), num_classes, dtype=torch.float64)  # rows: _AREAS

    def reset(self) -> None:
        """Zero the histograms."""
        self.areas.zero_()

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add a batch.

        Args:
            pred: (B, H, W) or (H, W) integer class indices in 0..K-1, on any device.
            label: same shape, class indices in 0..K-1 or ``ignore_index``.

        Raises:
            ValueError: shapes differ, or a prediction or non-ignored label is outside 0..K-1.
        """
        pred, label = torch.as_tensor(pred), torch.as_tensor(label)
        if pred.shape != label.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} shapes differ")
        keep = label != self.ignore_index
        pred, label = pred[keep].long(), label[keep].long()
        k = self.num_classes
        for name, values in (("prediction", pred), ("label", label)):
            if values.numel() and (values.min() < 0 or values.max() >= k):
                raise ValueError(f"{name} values must be in 0..{k - 1} (or {self.ignore_index} for labels)")
        confusion = (
            torch.bincount(label * k + pred, minlength=k * k).view(k, k).double().cpu()
        )  # (label, pred)
        intersect, pred_area, label_area = confusion.diagonal(), confusion.sum(0), confusion.sum(1)
        self.areas += torch.stack([intersect, pred_area + label_area - intersect, pred_area, label_area])

    def all_reduce(self) -> None:
        """Sum the histograms over all ranks when ``torch.distributed`` is initialised (no-op otherwise).

        With the NCCL backend the sum runs on the current CUDA device and the result comes back to the CPU.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        areas = self.areas.to(device)
        dist.all_reduce(areas, op=dist.ReduceOp.SUM)
        self.areas = areas.cpu()

    def compute(self) -> dict[str, float | list[float] | str]:
        """The metrics, in percent, with the semantics of ``self.metric``.

        Returns:
            ``aAcc``, ``mIoU``, ``mAcc``: floats in 0..100 (NaN when nothing was counted); ``IoU``, ``Acc``:
            K per-class values in 0..100, NaN where undefined (see the module docstring); ``metric``: the
            semantics used.
        """
        intersect, union, _, label_area = self.areas
        iou = intersect / union  # 0 / 0 -> NaN
        if self.metric == "detectron2":
            iou = torch.where(label_area > 0, iou, torch.nan)
        acc = intersect / label_area
        return {
            "aAcc": 100 * (intersect.sum() / label_area.sum()).item(),
            "mIoU": 100 * torch.nanmean(iou).item(),
            "mAcc": 100 * torch.nanmean(acc).item(),
            "IoU": (100 * iou).tolist(),
            "Acc": (100 * acc).tolist(),
            "metric": self.metric,
        }


_METRIC_NOTES = {
    "mmseg": "mmseg (a class never labelled but predicted has IoU 0)",
    "detectron2": "detectron2 (a class never labelled has IoU nan and is left out of mIoU)",
}


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.2f}"


def format_table(results: dict, class_names: tuple[str, ...] | list[str]) -> str:
    """Per-class table and summary line of :meth:`SegMetrics.compute` results, in percent with 2 decimals.

    Args:
        results: output of :meth:`SegMetrics.compute`.
        class_names: K names.

    Returns:
        Multi-line text: one ``Class | IoU | Acc`` row per class, then the metric semantics (``Metric: ...``)
        and the ``Summary: aAcc ... mIoU ... mAcc ...`` line.

    Raises:
        ValueError: ``class_names`` and the results have different lengths.
    """
    if len(class_names) != len(results["IoU"]):
        raise ValueError(f"{len(class_names)} class names for {len(results['IoU'])} classes")
    width = max(len("Class"), *(len(name) for name in class_names))
    lines = [f"{'Class':<{width}} | {'IoU':>6} | {'Acc':>6}", f"{'-' * width}-+-{'-' * 6}-+-{'-' * 6}"]
    for name, iou, acc in zip(class_names, results["IoU"], results["Acc"], strict=True):
        lines.append(f"{name:<{width}} | {_fmt(iou):>6} | {_fmt(acc):>6}")
    summary = "  ".join(f"{key}: {_fmt(results[key])}" for key in ("aAcc", "mIoU", "mAcc"))
    return "\n".join([*lines, "", f"Metric: {_METRIC_NOTES[results['metric']]}", f"Summary: {summary}"])
