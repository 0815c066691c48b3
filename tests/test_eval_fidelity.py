"""Evaluation reproduces the official test pipelines and metrics of both families (issue 16).

FPN models: mmseg 0.11 (``MultiScaleFlipAug`` / ``Resize`` on the uint8 image, ``EncoderDecoder.inference``:
logits resized to the original size, then the softmax; ``aug_test`` / ``simple_test``; ``mean_iou``). Mask models:
detectron2 (``ResizeShortestEdge`` with PIL on the uint8 image, ``sem_seg_postprocess``, ``DatasetMapperTTA`` +
``SemanticSegmentorWithTTA``, ``SemSegEvaluator``).
"""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

import semask
from semask.cli import main
from semask.configs import list_configs, load_config
from semask.data.transforms import TestTransform, normalize, rescale_size, resize_keep_ratio
from semask.engine.evaluate import evaluate
from semask.engine.inference import InferenceCfg, Predictor, predict_labels, predict_probs, slide_logits
from semask.errors import ConfigError
from semask.metrics import SegMetrics, format_table

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camvid_sample"


class FixedLogits(nn.Module):
    """Returns the same (1, K, h, w) logits (or detectron2 scores) for any input of the expected size, and
    records its inputs."""

    def __init__(self, logits: torch.Tensor, scores: bool = False) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits, requires_grad=False)
        self.output_kind = "scores" if scores else "logits"
        self.test_pipeline = "detectron2" if scores else "mmseg"
        self.decoder = SimpleNamespace(output_stride=1)  # maps at the input size: no chunked-argmax path
        self.inputs: list[torch.Tensor] = []

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2:] == self.logits.shape[-2:], (x.shape, self.logits.shape)
        self.inputs.append(x)
        return self.logits


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------ 1. resize, then softmax
def test_fpn_logits_are_resized_before_the_softmax_hand_computed():
    """mmseg 0.11 ``EncoderDecoder.inference`` (``rescale=True``): ``whole_inference`` resizes the logits to
    ``ori_shape`` (bilinear, align_corners=False), then ``F.softmax``; ``simple_test`` takes the argmax.

    A 1x4 image with test scale (2, 1) is inferred at 1x2 (mmcv ``rescale_size``: factor 0.5). Logit differences
    class0 - class1 of [-1, 4] resize to [-1, 0.25, 2.75, 4] (weights 0.75/0.25), so pixel 1 is class 0
    (sigmoid(0.25) = 0.5622); resizing the softmax instead would give 0.75 sigmoid(-1) + 0.25 sigmoid(4) = 0.4472
    and class 1.
    """
    model = FixedLogits(torch.tensor([[[[-1.0, 4.0]], [[0.0, 0.0]]]]))
    image = _image(1, 4)
    probs = predict_probs(model, image, InferenceCfg(scale=(2, 1)))
    sigmoid = [1 / (1 + math.exp(-d)) for d in (-1.0, 0.25, 2.75, 4.0)]
    torch.testing.assert_close(probs[0, 0, 0], torch.tensor(sigmoid))
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 1, 4))
    assert predict_labels(model, image, InferenceCfg(scale=(2, 1))).tolist() == [[[1, 0, 0, 0]]]
    assert model.inputs[0].shape == (1, 3, 1, 2)


def test_mask_model_scores_are_resized_without_softmax_hand_computed():
    """detectron2 ``sem_seg_postprocess``: the semantic scores are cropped and resized to the original (height,
    width), no softmax; the test resize is ``ResizeShortestEdge(1, max_size=2)``: 1x4 -> 1x2."""
    model = FixedLogits(torch.tensor([[[[0.0, 4.0]], [[1.0, 1.0]]]]), scores=True)
    probs = predict_probs(model, _image(1, 4), InferenceCfg(scale=(2, 1)))
    torch.testing.assert_close(probs[0], torch.tensor([[[0.0, 1.0, 3.0, 4.0]], [[1.0, 1.0, 1.0, 1.0]]]))


def _mmseg_aug_test(model: nn.Module, image: np.ndarray, ratios: tuple[float, ...]) -> torch.Tensor:
    """Transcription of mmseg 0.11 ``MultiScaleFlipAug(img_scale=None, img_ratios, flip=True)`` + ``Resize``
    (mmcv ``imrescale``) + ``RandomFlip`` (``mmcv.imflip`` of the uint8 image) + ``Normalize``, then
    ``EncoderDecoder.aug_test``: per pass ``encode_decode``, resize to ``ori_shape``, softmax, flip back; mean."""
    h, w = image.shape[:2]
    total = []
    for ratio in ratios:
        resized, _ = resize_keep_ratio(image, None, (int(h * ratio), int(w * ratio)))
        for flip in (False, True):
            x = normalize(resized[:, ::-1] if flip else resized)[None]
            logits = F.interpolate(model.predict_logits(x), size=(h, w), mode="bilinear", align_corners=False)
            probs = logits.softmax(1)
            total.append(probs.flip(-1) if flip else probs)
    return torch.stack(total).mean(0)


def test_fpn_ms_flip_equals_mmseg_aug_test():
    """The issue's 40x56 case, scales 0.5/1/1.5 + flip, against a transcription of mmseg 0.11 ``aug_test``
    (``mmseg/models/segmentors/encoder_decoder.py``, ``mmseg/datasets/pipelines/test_time_aug.py``)."""
    torch.manual_seed(0)
    model = semask.create_model("semask_swin_test_fpn", num_classes=5).eval()
    image = _image(40, 56)
    cfg = InferenceCfg(tta_ratios=(0.5, 1.0, 1.5), flip=True)
    with torch.no_grad():
        expected = _mmseg_aug_test(model, image, cfg.tta_ratios)
        got = predict_probs(model, image, cfg)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert torch.equal(predict_labels(model, image, cfg), expected.argmax(1))


def test_fpn_single_scale_with_a_resizing_test_scale_is_mmseg_simple_test():
    """mmseg 0.11 ``simple_test``: argmax of the logits of the rescaled image resized to the original size (also
    on the ``fast`` path, which never builds full-resolution probabilities)."""
    torch.manual_seed(0)
    model = semask.create_model("semask_swin_test_fpn", num_classes=5).eval()
    image = _image(37, 53)
    cfg = InferenceCfg(scale=(40, 28))  # rescale_size: factor min(40/53, 28/37) -> 28x40
    assert rescale_size(37, 53, cfg.scale) == (28, 40)
    x = TestTransform(cfg.scale)(image)["image"][None]
    for impl in ("fast", "reference"):
        with torch.no_grad(), semask.use_impl(impl):
            logits = F.interpolate(
                model.predict_logits(x), size=(37, 53), mode="bilinear", align_corners=False
            )
            assert torch.equal(predict_labels(model, image, cfg), logits.argmax(1)), impl


# ---------------------------------------------------------------------------- 2. resize the uint8 image
def test_mmseg_passes_resize_the_uint8_image_then_normalise():
    """mmseg 0.11 ``Resize(keep_ratio=True)`` runs mmcv ``imrescale`` (cv2 bilinear) on the uint8 image before
    ``Normalize``: the pass input is :class:`TestTransform`'s output, not the normalised image interpolated."""
    image = _image(40, 56)
    model = FixedLogits(torch.zeros(1, 2, 20, 28))
    predict_probs(model, image, InferenceCfg(scale=(28, 20)))
    expected = TestTransform((28, 20))(image)["image"][None]
    assert torch.equal(model.inputs[0], expected)
    floats = F.interpolate(normalize(image)[None], size=(20, 28), mode="bilinear", align_corners=False)
    assert (model.inputs[0] - floats).abs().max() > 1e-3  # what the old float path gave


def _pil(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """detectron2 ``ResizeTransform.apply_image`` for uint8 (``interp=Image.BILINEAR``)."""
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def _d2_output_shape(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2 ``ResizeShortestEdge.get_output_shape``."""
    scale = short / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max(newh, neww) > max_size:
        scale = max_size / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def test_detectron2_tta_resizes_the_test_resized_image_with_pil():
    """detectron2: the test mapper's ``ResizeShortestEdge(20, 100)`` (PIL bilinear on uint8); ``DatasetMapperTTA``
    resizes that image again to each ``MIN_SIZES`` entry and flips (``np.flip``); ``SemanticSegmentorWithTTA``
    averages the un-flipped ``sem_seg`` maps, each resized to the original (height, width) by the model."""
    torch.manual_seed(0)
    model = semask.create_model("semask_swin_test_m2f", num_classes=4).eval()
    image = _image(40, 56)
    cfg = InferenceCfg(scale=(100, 20), tta_scales=[(100, 20), (100, 30)], flip=True)
    base = _pil(image, _d2_output_shape(40, 56, 20, 100))
    assert base.shape[:2] == (20, 28)
    expected = []
    with torch.no_grad():
        for short in (20, 30):
            resized = _pil(base, _d2_output_shape(20, 28, short, 100))
            for flip in (False, True):
                x = normalize(np.flip(resized, axis=1) if flip else resized)[None]
                scores = F.interpolate(model.predict(x), (40, 56), mode="bilinear", align_corners=False)
                expected.append(scores.flip(-1) if flip else scores)
        got = predict_probs(model, image, cfg)
    torch.testing.assert_close(got, torch.stack(expected).mean(0), rtol=0, atol=1e-6)
    cv2_like = normalize(resize_keep_ratio(image, None, (28, 20))[0])
    assert (normalize(base) - cv2_like).abs().max() > 1e-3  # PIL and OpenCV differ when shrinking


def test_a_normalised_tensor_that_would_be_resized_is_refused():
    model = FixedLogits(torch.zeros(1, 2, 20, 28))
    with pytest.raises(ValueError, match="uint8 image"):
        predict_probs(model, normalize(_image(40, 56))[None], InferenceCfg(scale=(28, 20)))


# ------------------------------------------------------------------------------------ 3. slide windows
@pytest.mark.parametrize(
    ("crop", "stride", "message"),
    [
        ((3, 3), (5, 5), "larger than the crop"),
        ((32, 32), (64, 16), "larger than the crop"),
        ((0, 3), (1, 1), "positive"),
    ],
)
def test_slide_windows_must_cover_every_pixel(crop, stride, message):
    """mmseg 0.11 ``slide_inference`` asserts ``(count_mat == 0).sum() == 0``; a stride larger than the crop
    leaves pixels uncovered (NaN logits before, class 0 through ``predict_labels``)."""
    with pytest.raises(ConfigError, match=message):
        InferenceCfg(mode="slide", crop=crop, stride=stride)
    model = FixedLogits(torch.zeros(1, 2, 3, 3))
    with pytest.raises(ConfigError, match=message):
        slide_logits(model, torch.zeros(1, 3, 8, 16), crop, stride)
    cfg = InferenceCfg(mode="slide")
    cfg.crop, cfg.stride = crop, stride  # changed after construction, as `semask eval --crop --stride` does
    with pytest.raises(ConfigError, match=message):
        predict_labels(model, _image(8, 16), cfg)
    with pytest.raises(ConfigError, match="'whole' or 'slide'"):
        InferenceCfg(mode="tiles")


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 40), w=st.integers(1, 40), ch=st.integers(1, 12), cw=st.integers(1, 12), data=st.data()
)
def test_valid_slide_windows_cover_every_pixel(h, w, ch, cw, data):
    """With stride <= crop, mmseg's window grid covers every pixel: the averaged logits are all finite."""
    sh, sw = data.draw(st.integers(1, ch)), data.draw(st.integers(1, cw))

    class Ones(nn.Module):
        def predict(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(x.shape[0], 2, *x.shape[-2:])

    out = slide_logits(Ones(), torch.zeros(1, 3, h, w), (ch, cw), (sh, sw))
    assert torch.equal(out, torch.ones(1, 2, h, w))


# ---------------------------------------------------------------------------------------- 4. metrics
def test_detectron2_metric_leaves_unlabelled_classes_out_hand_computed():
    """Labels [0, 0, 1, 1], prediction [0, 2, 1, 1]: IoU 50, 100 and, for class 2 (predicted, never labelled),
    0 in mmseg 0.11 ``mean_iou`` (mIoU 50) but NaN in detectron2 ``SemSegEvaluator.evaluate`` (mIoU 75); class 3
    (neither) is NaN in both. aAcc 75 and mAcc 75 in both."""
    label, pred = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 2, 1, 1])
    out = {}
    for metric in ("mmseg", "detectron2"):
        m = SegMetrics(4, metric=metric)
        m.update(pred, label)
        out[metric] = m.compute()
        assert out[metric]["metric"] == metric
        assert out[metric]["aAcc"] == 75.0 and out[metric]["mAcc"] == 75.0
    assert out["mmseg"]["IoU"][:3] == [50.0, 100.0, 0.0] and math.isnan(out["mmseg"]["IoU"][3])
    assert out["detectron2"]["IoU"][:2] == [50.0, 100.0] and all(
        map(math.isnan, out["detectron2"]["IoU"][2:])
    )
    assert out["mmseg"]["mIoU"] == 50.0 and out["detectron2"]["mIoU"] == 75.0
    with pytest.raises(ValueError, match="metric"):
        SegMetrics(4, metric="coco")


def _d2_sem_seg_evaluator(pred: np.ndarray, gt: np.ndarray, k: int, ignore: int = 255) -> dict:
    """Transcription of detectron2 ``SemSegEvaluator.process`` + ``evaluate`` (numpy, (K+1)^2 confusion)."""
    gt = np.where(gt == ignore, k, gt)
    conf = np.bincount((k + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=(k + 1) ** 2).reshape(
        k + 1, k + 1
    )
    acc, iou = np.full(k, np.nan), np.full(k, np.nan)
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = conf[:-1, :-1].sum(0).astype(float)
    pos_pred = conf[:-1, :-1].sum(1).astype(float)
    acc_valid = pos_gt > 0
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    union = pos_gt + pos_pred - tp
    iou_valid = acc_valid & (union > 0)
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    return {
        "mIoU": 100 * iou[iou_valid].sum() / iou_valid.sum(),
        "mACC": 100 * acc[acc_valid].sum() / acc_valid.sum(),
        "pACC": 100 * tp.sum() / pos_gt.sum(),
        "IoU": 100 * iou,
    }


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(2, 6))
def test_detectron2_metric_matches_sem_seg_evaluator(seed, k):
    rng = np.random.default_rng(seed)
    gt = rng.choice([*range(k // 2 + 1), 255], size=(9, 11))  # the upper classes are never labelled
    if (gt == 255).all():
        gt[0, 0] = 0
    pred = rng.integers(0, k, size=gt.shape)
    metrics = SegMetrics(k, metric="detectron2")
    metrics.update(torch.from_numpy(pred), torch.from_numpy(gt))
    out, ref = metrics.compute(), _d2_sem_seg_evaluator(pred, gt, k)
    np.testing.assert_allclose(out["IoU"], ref["IoU"])
    np.testing.assert_allclose(
        [out["mIoU"], out["mAcc"], out["aAcc"]], [ref["mIoU"], ref["mACC"], ref["pACC"]]
    )


def test_presets_use_their_official_metric_and_the_table_says_which():
    for name in list_configs():
        cfg = load_config(name)
        mask_model = any(d in cfg.model["arch"] for d in ("_m2f", "_maskformer"))
        assert cfg.eval.metric == ("detectron2" if mask_model else "mmseg"), name
    m = SegMetrics(2, metric="detectron2")
    m.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    lines = format_table(m.compute(), ["a", "b"]).splitlines()
    assert lines[-2] == "Metric: detectron2 (a class never labelled has IoU nan and is left out of mIoU)"
    assert lines[-1] == "Summary: aAcc: 50.00  mIoU: 50.00  mAcc: 50.00"


def test_evaluate_and_the_cli_report_the_metric(tmp_path, capsys):
    """``evaluate`` scores with the metric asked for; ``semask eval --json`` stores it (converted weights: the
    model family's, FPN -> mmseg)."""
    torch.manual_seed(0)
    model = semask.create_model("semask_swin_test_fpn", num_classes=11).eval()
    path = tmp_path / "m.safetensors"
    semask.save_model(model, path)
    printed = {}
    for metric in (None, "detectron2"):
        argv = ["eval", str(path), "--dataset", "camvid", "--data-root", str(SAMPLE), "--json"]
        assert main(argv + (["--metric", metric] if metric else [])) == 0
        printed[metric] = json.loads(capsys.readouterr().out)
    assert printed[None]["metric"] == "mmseg" and printed["detectron2"]["metric"] == "detectron2"
    assert printed[None]["aAcc"] == printed["detectron2"]["aAcc"]
    never_labelled = [
        i for i, iou in enumerate(printed[None]["IoU"]) if iou == 0.0 and printed[None]["Acc"][i] is None
    ]
    assert all(printed["detectron2"]["IoU"][i] is None for i in never_labelled)
    assert printed["detectron2"]["mIoU"] >= printed[None]["mIoU"]


# ------------------------------------------------------------------------------------- tiny test model
@pytest.mark.parametrize("arch", ["m2f", "maskformer", "fapn_m2f", "msfapn_m2f"])
def test_tiny_mask_models_segment_a_single_pixel(arch):
    """The tiny mask models' GroupNorm(32) layers get 2 channels per group, so a 1x1 stride-32 map (inputs up to
    32x32 pixels) normalises."""
    model = semask.create_model(f"semask_swin_test_{arch}", num_classes=3).eval()
    for h, w in ((1, 1), (2, 3), (32, 32)):
        pred = Predictor(model, InferenceCfg(flip=True)).predict(_image(h, w))
        assert pred.shape == (h, w) and pred.max() < 3


def test_evaluate_runs_the_uint8_pipeline_on_a_dataset():
    """``evaluate`` feeds the raw uint8 images to the same pipeline as ``predict_labels``."""
    torch.manual_seed(0)
    model = semask.create_model("semask_swin_test_fpn", num_classes=2).eval()
    images = [_image(30, 44, seed) for seed in range(2)]
    labels = [np.random.default_rng(seed).integers(0, 2, (30, 44), dtype=np.uint8) for seed in range(2)]
    dataset = [{"image": i, "label": lab} for i, lab in zip(images, labels, strict=True)]
    cfg = InferenceCfg(scale=(22, 15))
    out = evaluate(model, dataset, 2, cfg, torch.device("cpu"), progress=False, metric="detectron2")
    expected = SegMetrics(2, metric="detectron2")
    for image, label in zip(images, labels, strict=True):
        expected.update(predict_labels(model, image, cfg)[0], torch.from_numpy(label).long())
    assert out == expected.compute()
