"""SegMetrics against hand-computed confusion matrices (SPEC A5: mmseg aAcc / mIoU / mAcc, NaN-skipping means)."""

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from semask.metrics import SegMetrics, format_table

FAST = settings(max_examples=100, deadline=None)


def test_hand_computed_example_with_ignore():
    label = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])  # the last pixel is ignored whatever it predicts
    # counted (label, pred): (0,0) (0,1) (1,1) (1,1) (2,0) -> I = [1, 2, 0], P = [2, 3, 0], L = [2, 2, 1], U = [3, 3, 1]
    metrics = SegMetrics(3)
    metrics.update(pred, label)
    out = metrics.compute()
    assert out["IoU"] == pytest.approx([100 / 3, 200 / 3, 0.0])
    assert out["Acc"] == pytest.approx([50.0, 100.0, 0.0])
    assert out["aAcc"] == pytest.approx(60.0)
    assert out["mIoU"] == pytest.approx(100 / 3)
    assert out["mAcc"] == pytest.approx(50.0)


def test_absent_classes_are_nan_and_left_out_of_the_means():
    label = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])  # class 2 predicted but never labelled; class 3 neither
    metrics = SegMetrics(4)
    metrics.update(pred, label)
    out = metrics.compute()
    # I = [1, 2, 0, 0], U = [2, 2, 1, 0], L = [2, 2, 0, 0]
    assert out["IoU"][:3] == pytest.approx([50.0, 100.0, 0.0]) and math.isnan(out["IoU"][3])
    assert (
        out["Acc"][:2] == pytest.approx([50.0, 100.0])
        and math.isnan(out["Acc"][2])
        and math.isnan(out["Acc"][3])
    )
    assert out["mIoU"] == pytest.approx(50.0)  # (50 + 100 + 0) / 3: class 3 excluded, class 2 counts as 0
    assert out["mAcc"] == pytest.approx(75.0)
    assert out["aAcc"] == pytest.approx(75.0)


def test_batches_accumulate_like_one_big_update():
    rng = np.random.default_rng(0)
    label = torch.from_numpy(rng.choice([0, 1, 2, 255], size=(4, 6, 7)))
    pred = torch.from_numpy(rng.integers(0, 3, size=(4, 6, 7)))
    whole, parts = SegMetrics(3), SegMetrics(3)
    whole.update(pred, label)
    for p, lab in zip(pred, label, strict=True):
        parts.update(p, lab)
    assert torch.equal(whole.areas, parts.areas)
    whole.reset()
    assert whole.areas.sum() == 0 and math.isnan(whole.compute()["aAcc"])


def test_invalid_inputs_raise():
    metrics = SegMetrics(3)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.update(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="label values"):
        metrics.update(torch.zeros(4), torch.tensor([0, 1, 3, 255]))
    with pytest.raises(ValueError, match="prediction values"):
        metrics.update(torch.tensor([0, -1]), torch.tensor([0, 1]))


def test_all_reduce_is_a_no_op_without_and_a_sum_with_a_process_group(tmp_path):
    metrics = SegMetrics(2)
    metrics.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    before = metrics.areas.clone()
    metrics.all_reduce()
    assert torch.equal(metrics.areas, before)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        metrics.all_reduce()
    finally:
        dist.destroy_process_group()
    assert torch.equal(metrics.areas, before) and metrics.areas.device.type == "cpu"


def test_format_table_lists_classes_and_summary():
    metrics = SegMetrics(3)
    metrics.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    text = format_table(metrics.compute(), ["sky", "road", "tree"])
    lines = text.splitlines()
    assert lines[2].split() == ["sky", "|", "50.00", "|", "50.00"]
    assert lines[3].split() == ["road", "|", "50.00", "|", "100.00"]
    assert lines[4].split() == ["tree", "|", "nan", "|", "nan"]
    assert lines[-1] == "Summary: aAcc: 66.67  mIoU: 50.00  mAcc: 75.00"
    with pytest.raises(ValueError, match="class names"):
        format_table(metrics.compute(), ["sky"])


labels_2d = arrays(
    np.int64, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.sampled_from([0, 1, 2, 3, 255])
)


@FAST
@given(label=labels_2d)
def test_perfect_prediction_scores_100_over_present_classes(label):
    pred = np.where(label == 255, 0, label)
    metrics = SegMetrics(4)
    metrics.update(torch.from_numpy(pred), torch.from_numpy(label))
    out = metrics.compute()
    present = set(np.unique(label).tolist()) - {255}
    for k in range(4):
        assert (out["IoU"][k] == 100.0) if k in present else math.isnan(out["IoU"][k])
    if present:
        assert out["mIoU"] == out["mAcc"] == out["aAcc"] == 100.0


@FAST
@given(label=labels_2d, seed=st.integers(0, 2**16))
def test_predictions_on_ignored_pixels_do_not_matter(label, seed):
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, 4, size=label.shape)
    other = np.where(label == 255, rng.integers(0, 4, size=label.shape), pred)
    first, second = SegMetrics(4), SegMetrics(4)
    first.update(torch.from_numpy(pred), torch.from_numpy(label))
    second.update(torch.from_numpy(other), torch.from_numpy(label))
    assert torch.equal(first.areas, second.areas)


@FAST
@given(label=labels_2d, seed=st.integers(0, 2**16))
def test_matches_a_naive_confusion_matrix(label, seed):
    pred = np.random.default_rng(seed).integers(0, 4, size=label.shape)
    metrics = SegMetrics(4)
    metrics.update(torch.from_numpy(pred), torch.from_numpy(label))
    confusion = np.zeros((4, 4))
    for lab, p in zip(label.ravel(), pred.ravel(), strict=True):
        if lab != 255:
            confusion[lab, p] += 1
    intersect, union = np.diag(confusion), confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected_iou = 100 * intersect / union
    np.testing.assert_allclose(metrics.compute()["IoU"], expected_iou)
