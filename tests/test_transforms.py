"""Paired transforms (SPEC A3): OpenCV-exact resizes and colour conversions, mmseg crop/flip/jitter semantics,
and properties of the whole training pipeline (alignment, label set, ignore, output size)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from semask.data.cv2_ops import (
    hsv_to_rgb,
    pad_to,
    photometric_distortion,
    resize_bilinear,
    resize_nearest,
    rgb_to_hsv,
)
from semask.data.transforms import (
    MEAN,
    STD,
    TestTransform,
    TrainTransform,
    crop_is_varied,
    normalize,
    random_crop,
    random_flip,
    rescale_size,
    resize_keep_ratio,
    sample_rng,
)

FAST = settings(max_examples=100, deadline=None)


def positions_image(height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 image whose pixel (y, x) is (y, x, 0): lets a test find where each output pixel came from."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)


class ScriptedRng:
    """Stands in for a numpy Generator, returning scripted draws in order (to pin down mmseg's branch order)."""

    def __init__(self, *draws: float) -> None:
        self.draws = list(draws)

    def _next(self, *_args: object) -> float:
        return self.draws.pop(0)

    integers = uniform = random = _next


# ------------------------------------------------------------------------------------------- resizing
@pytest.mark.parametrize(
    ("size", "scale", "ratio", "expected"),
    [
        ((512, 683), (2048, 512), 1.0, (512, 683)),  # ADE: short side already 512
        ((512, 683), (2048, 512), 0.5, (256, 342)),  # int(683 * 0.5 + 0.5) = 342
        ((1024, 2048), (2048, 1024), 0.5, (512, 1024)),  # Cityscapes ratio 0.5
        ((360, 480), (2048, 512), 1.75, (896, 1195)),  # bound (3584, 896): short side limits
        ((100, 1000), (2048, 512), 1.0, (205, 2048)),  # long side limits: f = 2.048
    ],
)
def test_keep_ratio_sizes_follow_mmcv_imrescale(size, scale, ratio, expected):
    img = np.zeros((*size, 3), np.uint8)
    out, label = resize_keep_ratio(img, np.zeros(size, np.uint8), scale, ratio)
    assert out.shape[:2] == label.shape == expected
    assert rescale_size(*size, (int(scale[0] * ratio), int(scale[1] * ratio))) == expected


def test_bilinear_matches_opencv_golden_values():
    # Expected values produced by cv2.resize(..., INTER_LINEAR) of OpenCV 4.10 on these inputs.
    small = np.array([[78, 204, 64, 34], [16, 250, 233, 32], [103, 122, 13, 204]], np.uint8)
    enlarged = [
        [78, 141, 181, 87, 49, 34],
        [53, 138, 207, 147, 82, 33],
        [16, 133, 247, 236, 133, 32],
        [68, 121, 161, 113, 118, 135],
        [103, 112, 104, 31, 108, 204],
    ]
    big = np.array(
        [
            [138, 172, 208, 127, 124, 100, 12],
            [151, 222, 203, 251, 153, 211, 235],
            [80, 182, 176, 41, 88, 7, 141],
            [241, 73, 124, 223, 123, 222, 37],
            [84, 55, 200, 102, 211, 60, 159],
        ],
        np.uint8,
    )
    shrunk = [[189, 220, 182], [113, 193, 143]]
    assert resize_bilinear(small[:, :, None], (5, 6))[:, :, 0].tolist() == enlarged
    assert resize_bilinear(big[:, :, None], (2, 3))[:, :, 0].tolist() == shrunk


def test_bilinear_keeps_constant_images_and_identity_size():
    img = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    assert np.array_equal(resize_bilinear(img, (9, 13)), img)
    flat = np.full((7, 5, 3), 77, np.uint8)
    assert (resize_bilinear(flat, (20, 3)) == 77).all()


def test_nearest_uses_opencv_floor_mapping():
    label = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert resize_nearest(label, (2, 2)).tolist() == [[0, 2], [8, 10]]
    # enlarging 2 -> 3: source = floor(x * 2 / 3) = 0, 0, 1
    assert resize_nearest(np.array([[5, 9]], np.uint8), (1, 3)).tolist() == [[5, 5, 9]]


@FAST
@given(
    label=arrays(
        np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.sampled_from([0, 3, 7, 255])
    ),
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
)
def test_nearest_never_invents_label_values(label, size):
    out = resize_nearest(label, size)
    assert out.shape == size
    assert set(np.unique(out)) <= set(np.unique(label))


# ---------------------------------------------------------------------------------------------- HSV
def test_rgb_to_hsv_matches_opencv_golden_values():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [10, 200, 30],
                     [128, 128, 64], [1, 2, 3]]], np.uint8)  # fmt: skip
    expected = [[0, 255, 255], [60, 255, 255], [120, 255, 255], [0, 0, 255], [0, 0, 0], [63, 242, 200],
                [30, 128, 128], [105, 170, 3]]  # fmt: skip
    assert rgb_to_hsv(rgb)[0].tolist() == expected


def test_hsv_to_rgb_matches_opencv_golden_values():
    # OpenCV 4.10 HSV2RGB of these HSV pixels (its vectorised path: truncation, not rounding).
    hsv = np.array([[[61, 157, 138], [9, 217, 140], [117, 240, 118], [72, 184, 241], [43, 190, 221],
                     [110, 215, 208], [68, 210, 193], [108, 79, 242]]], np.uint8)  # fmt: skip
    expected = [[53, 138, 55], [140, 56, 20], [6, 18, 118], [67, 241, 136], [149, 221, 56], [32, 91, 208],
                [34, 193, 76], [167, 197, 242]]  # fmt: skip
    assert hsv_to_rgb(hsv)[0].tolist() == expected


def test_hsv_round_trip_keeps_greys_exactly():
    greys = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    assert np.array_equal(hsv_to_rgb(rgb_to_hsv(greys)), greys)


# ------------------------------------------------------------------------------------ photometric jitter
def test_photometric_contrast_first_branch():
    img = np.array([[[10, 100, 200]]], np.uint8)
    # brightness on (+10.7), mode 1 = contrast first (on, x2), saturation off, hue off
    out = photometric_distortion(img, ScriptedRng(1, 10.7, 1, 1, 2.0, 0, 0))
    assert out.tolist() == [[[40, 220, 255]]]  # truncated to (20, 110, 210), then doubled and clipped


def test_photometric_contrast_last_branch_and_saturation():
    img = np.array([[[10, 100, 200]]], np.uint8)
    # brightness off, mode 0 = contrast last; saturation on with factor 0 -> grey at V = max; hue off;
    # contrast on (x0.5) at the end
    out = photometric_distortion(img, ScriptedRng(0, 0, 1, 0.0, 0, 1, 0.5))
    assert out.tolist() == [[[100, 100, 100]]]


def test_photometric_hue_shift_moves_red_towards_yellow():
    img = np.full((1, 1, 3), (255, 0, 0), np.uint8)
    out = photometric_distortion(img, ScriptedRng(0, 1, 0, 0, 1, 15))  # hue +15 units = +30 degrees
    assert out.tolist() == [[[255, 127, 0]]]  # 30 degrees: G = 255 * 0.5, truncated


def test_photometric_draws_are_reproducible_and_keep_dtype():
    img = np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    first = photometric_distortion(img, np.random.default_rng(5))
    assert first.dtype == np.uint8 and first.shape == img.shape
    assert np.array_equal(first, photometric_distortion(img, np.random.default_rng(5)))


# ----------------------------------------------------------------------------------------- crop and flip
def test_crop_retries_ten_times_then_keeps_the_last_draw():
    label = np.zeros((40, 40), np.uint8)  # one class: no window can satisfy cat_max_ratio
    img = positions_image(40, 40)
    rng, replay = np.random.default_rng(3), np.random.default_rng(3)
    out_img, out_label = random_crop(img, label, (10, 10), 0.75, rng)
    offsets = [(int(replay.integers(0, 31)), int(replay.integers(0, 31))) for _ in range(11)]
    assert (int(out_img[0, 0, 0]), int(out_img[0, 0, 1])) == offsets[-1]
    assert rng.integers(1 << 30) == replay.integers(1 << 30)  # exactly 11 windows were drawn


def test_crop_without_cat_max_ratio_draws_once():
    rng, replay = np.random.default_rng(4), np.random.default_rng(4)
    random_crop(positions_image(30, 30), np.zeros((30, 30), np.uint8), (10, 10), 1.0, rng)
    replay.integers(0, 21), replay.integers(0, 21)
    assert rng.integers(1 << 30) == replay.integers(1 << 30)


def test_crop_is_varied_follows_mmseg_rule():
    assert not crop_is_varied(np.zeros((4, 4), np.uint8), 0.75)  # a single class
    two = np.array([[0, 0, 1, 255]], np.uint8)  # 2 of 3 counted pixels are class 0
    assert crop_is_varied(two, 0.75) and not crop_is_varied(two, 0.6)


@FAST
@given(
    shape=st.tuples(st.integers(4, 30), st.integers(4, 30)),
    crop=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    seed=st.integers(0, 2**16),
    ratio=st.sampled_from([0.6, 0.75, 1.0]),
)
def test_crop_returns_an_aligned_window_and_respects_cat_max_ratio(shape, crop, seed, ratio):
    rng = np.random.default_rng(seed)
    label = rng.choice(np.array([0, 1, 2, 255], np.uint8), size=shape)
    img = positions_image(*shape)
    out_img, out_label = random_crop(img, label, crop, ratio, rng)
    assert out_img.shape[:2] == out_label.shape == (min(shape[0], crop[0]), min(shape[1], crop[1]))
    top, left = int(out_img[0, 0, 0]), int(out_img[0, 0, 1])
    window = (slice(top, top + out_label.shape[0]), slice(left, left + out_label.shape[1]))
    assert np.array_equal(out_label, label[window]) and np.array_equal(out_img, img[window])
    windows = [
        label[y : y + crop[0], x : x + crop[1]]
        for y in range(max(shape[0] - crop[0], 0) + 1)
        for x in range(max(shape[1] - crop[1], 0) + 1)
    ]
    if ratio < 1 and all(crop_is_varied(w, ratio) for w in windows):
        assert crop_is_varied(out_label, ratio)


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_flip_flips_image_and_label_together(prob):
    img, label = positions_image(3, 5), np.arange(15, dtype=np.uint8).reshape(3, 5)
    out_img, out_label = random_flip(img, label, prob, np.random.default_rng(0))
    expected = (img[:, ::-1], label[:, ::-1]) if prob else (img, label)
    assert np.array_equal(out_img, expected[0]) and np.array_equal(out_label, expected[1])


# ------------------------------------------------------------------------------------ normalize and pad
def test_normalize_gives_channel_first_float32():
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 1] = 255
    out = normalize(img)
    assert out.shape == (3, 2, 3) and out.dtype == torch.float32
    expected = [(0 - MEAN[0]) / STD[0], (255 - MEAN[1]) / STD[1], (0 - MEAN[2]) / STD[2]]
    assert torch.allclose(out[:, 0, 0], torch.tensor(expected), atol=1e-5)


def test_pad_fills_bottom_right_with_zero_and_ignore():
    img, label = torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.int64)
    out_img, out_label = pad_to(img, label, (4, 5))
    assert out_img.shape == (3, 4, 5) and out_label.shape == (4, 5)
    assert (
        (out_img[:, :2, :3] == 1).all() and out_img[:, 2:].abs().sum() == 0 and out_img[:, :, 3:].sum() == 0
    )
    assert (out_label[:2, :3] == 0).all() and (out_label[2:] == 255).all() and (out_label[:, 3:] == 255).all()
    with pytest.raises(ValueError, match="smaller size"):
        pad_to(img, label, (1, 5))


# ------------------------------------------------------------------------------------------- pipelines
LABEL_SET = np.array([0, 4, 9, 255], np.uint8)


@FAST
@given(
    shape=st.tuples(st.integers(8, 60), st.integers(8, 60)),
    crop=st.tuples(st.integers(4, 48), st.integers(4, 48)),
    seed=st.integers(0, 2**16),
    ratio_kind=st.sampled_from(["list", "range", "none"]),
)
def test_train_transform_output_contract(shape, crop, seed, ratio_kind):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    label = rng.choice(LABEL_SET, size=shape)
    transform = TrainTransform(
        crop,
        scale=(64, 32),
        ratios=(0.5, 1.0, 1.5) if ratio_kind == "list" else None,
        ratio_range=(0.5, 2.0) if ratio_kind == "range" else None,
        cat_max_ratio=0.75,
    )
    out = transform(img, label, rng=np.random.default_rng(seed))
    assert out["image"].shape == (3, *crop) and out["image"].dtype == torch.float32
    assert out["label"].shape == crop and out["label"].dtype == torch.int64
    assert set(out["label"].unique().tolist()) <= set(LABEL_SET.tolist())


@FAST
@given(shape=st.tuples(st.integers(4, 40), st.integers(4, 40)), crop=st.tuples(st.integers(2, 48), st.integers(2, 48)),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_train_transform_keeps_image_and_label_aligned(shape, crop, seed):
    # Scale bound equal to the image size -> resize factor 1; no colour jitter -> positions survive normalize.
    img = positions_image(*shape)
    label = np.random.default_rng(seed).choice(LABEL_SET, size=shape)
    transform = TrainTransform(crop, scale=(max(shape), min(shape)), cat_max_ratio=0.75, photometric=False)
    out = transform(img, label, rng=np.random.default_rng(seed))
    pixels = out["image"] * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    h, w = min(shape[0], crop[0]), min(shape[1], crop[1])
    rows, cols = pixels[0, :h, :w].round().long(), pixels[1, :h, :w].round().long()
    assert torch.equal(out["label"][:h, :w], torch.from_numpy(label.astype(np.int64))[rows, cols])
    assert (out["label"][h:] == 255).all() and (out["label"][:, w:] == 255).all()  # padding is ignored
    assert (out["image"][:, h:] == 0).all() and (out["image"][:, :, w:] == 0).all()


def test_train_transform_rng_sources():
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    label = np.random.default_rng(1).choice(LABEL_SET, size=(40, 50))
    transform = TrainTransform((16, 16), scale=(64, 32), ratios=(0.5, 1.0, 2.0), seed=7)
    first = transform(img, label)
    transform.set_epoch_seed(7)
    assert torch.equal(transform(img, label)["image"], first["image"])
    a = transform(img, label, rng=sample_rng(0, 1, 2))
    b = transform(img, label, rng=sample_rng(0, 1, 2))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    with pytest.raises(ValueError, match="not both"):
        TrainTransform((8, 8), (64, 32), ratios=(1.0,), ratio_range=(0.5, 2.0))


def test_test_transform_resizes_image_only():
    img = np.zeros((100, 200, 3), np.uint8)
    label = np.full((100, 200), 3, np.uint8)
    out = TestTransform(scale=(100, 25))(img, label)
    assert out["image"].shape == (3, 25, 50)
    assert (
        out["label"].shape == (100, 200) and out["label"].dtype == torch.int64 and (out["label"] == 3).all()
    )
    assert TestTransform()(img)["image"].shape == (3, 100, 200) and "label" not in TestTransform()(img)
