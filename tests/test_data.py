"""Data layer: metadata tables, image/label reading, dataset loaders on the real mini datasets, the COCO-Stuff
converter, and the error for every kind of bad file."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semask.cli import main
from semask.data import (
    DatasetMeta,
    TrainTransform,
    build_dataset,
    get_meta,
    image_size,
    prepare_coco_stuff_10k,
    read_image,
    read_label,
)
from semask.data.class_weights import median_frequency_weights
from semask.errors import ConfigError, DataError

DATA_ROOT = Path(
    os.environ.get("SEMASK_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


def real_data(name: str) -> Path:
    """Folder of a real mini dataset under ``SEMASK_DATA``, or skip the test saying why."""
    path = DATA_ROOT / name
    if not path.is_dir():
        pytest.skip(f"real data {path} not found (set SEMASK_DATA to the shared data folder)")
    return path


def save(path: Path, pixels: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)
    return path


def palette_png(path: Path, indices: np.ndarray, palette: list[int]) -> Path:
    img = Image.new("P", indices.shape[::-1])
    img.putdata(indices.ravel().tolist())
    img.putpalette(palette)
    img.save(path)
    return path


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def folder_dataset(root: Path, masks: dict[str, np.ndarray], classes: object = ("a", "b", "c")) -> Path:
    """A ``folder`` dataset with one image (same size as its mask) per entry, split ``train``."""
    (root / "classes.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps(classes))
    for stem, mask in masks.items():
        save(root / "images" / "train" / f"{stem}.jpg", noise(*mask.shape))
        save(root / "masks" / "train" / f"{stem}.png", mask)
    return root


# -------------------------------------------------------------------------------------------- metadata
@pytest.mark.parametrize(
    ("name", "num_classes", "first", "last", "reduce"),
    [
        ("ade20k", 150, "wall", "flag", True),
        ("cityscapes", 19, "road", "bicycle", False),
        ("coco-stuff-10k", 171, "person", "wood", True),
        ("camvid", 11, "Sky", "Bicyclist", False),
    ],
)
def test_builtin_metadata(name, num_classes, first, last, reduce):
    meta = get_meta(name)
    assert meta.num_classes == len(meta.palette) == num_classes
    assert (meta.classes[0], meta.classes[-1], meta.reduce_zero_label, meta.ignore_index) == (
        first,
        last,
        reduce,
        255,
    )
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in meta.palette)


def test_known_palette_entries():
    assert get_meta("ade20k").palette[:2] == ((120, 120, 120), (180, 120, 120))
    assert get_meta("cityscapes").palette[0] == (128, 64, 128)
    assert get_meta("camvid").palette[3] == (128, 64, 128)  # Road
    assert get_meta("coco-stuff-10k").classes[11] == "stop sign"  # COCO id 13 (id 12 is absent)


def test_unknown_dataset_names_list_the_known_ones():
    with pytest.raises(ConfigError, match="ade20k, camvid, cityscapes, coco-stuff-10k"):
        get_meta("pascal")
    with pytest.raises(ConfigError, match="folder"):
        build_dataset("pascal", "/nowhere", "train")


# ------------------------------------------------------------------------------------------ reading
def test_image_modes_become_rgb_uint8(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    assert np.array_equal(read_image(save(tmp_path / "l.png", gray)), np.repeat(gray[:, :, None], 3, 2))
    sixteen = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 257 * 20).astype(np.uint16)
    out = read_image(save(tmp_path / "i16.png", sixteen))
    assert out.dtype == np.uint8 and out.shape == (3, 4, 3) and np.array_equal(out[:, :, 0], gray)
    rgba = np.dstack([noise(3, 4), np.zeros((3, 4), np.uint8)])  # fully transparent: alpha is dropped
    assert np.array_equal(read_image(save(tmp_path / "rgba.png", rgba)), rgba[:, :, :3])
    palette_png(tmp_path / "p.png", np.array([[0, 1], [1, 0]], np.uint8), [10, 20, 30, 200, 100, 0])
    assert read_image(tmp_path / "p.png")[0].tolist() == [[10, 20, 30], [200, 100, 0]]
    Image.new("CMYK", (5, 4), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")  # magenta
    cmyk = read_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (4, 5, 3) and np.abs(cmyk.astype(int) - [255, 0, 255]).max() <= 3


def test_exif_orientation_is_applied(tmp_path):
    rows, cols = np.meshgrid(np.arange(10), np.arange(20), indexing="ij")
    pixels = np.stack([rows * 25, cols * 12, np.full_like(rows, 128)], axis=-1).astype(np.uint8)  # smooth
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "rotated.jpg")
    assert out.shape == (20, 10, 3) and image_size(tmp_path / "rotated.jpg") == (20, 10)
    assert np.abs(out.astype(int) - np.rot90(pixels, k=-1)).max() < 16  # JPEG noise only


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("empty.jpg", lambda p: p.write_bytes(b""), "empty file"),
        ("text.png", lambda p: p.write_text("not an image"), "not an image"),
        ("missing.png", lambda p: None, "no such file"),
    ],
)
def test_unreadable_files_raise_data_error_naming_them(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    for reader in (read_image, read_label, image_size):
        with pytest.raises(DataError, match=message) as info:
            reader(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_raise_data_error(tmp_path, suffix):
    path = save(tmp_path / f"cut{suffix}", noise(64, 64))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_labels_keep_indices(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 255]], np.uint8)
    palette_png(tmp_path / "p.png", indices, [v % 256 for v in range(768)])
    assert np.array_equal(read_label(tmp_path / "p.png"), indices)
    assert np.array_equal(read_label(save(tmp_path / "grey3.png", np.dstack([indices] * 3))), indices)
    assert np.array_equal(read_label(save(tmp_path / "i16.png", indices.astype(np.uint16))), indices)
    assert np.array_equal(read_label(save(tmp_path / "1bit.png", indices.astype(bool))), indices.astype(bool))


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (
            np.dstack([np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8), np.zeros((2, 2), np.uint8)]),
            "colour",
        ),
        (np.full((2, 2), 300, np.uint16), "0..255, found 300..300"),
    ],
)
def test_bad_labels_raise_data_error(tmp_path, pixels, message):
    path = save(tmp_path / "label.png", pixels)
    with pytest.raises(DataError, match=message) as info:
        read_label(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------------------- real datasets
@pytest.mark.parametrize("inner", [False, True])
def test_ade20k_reduces_zero_label(inner):
    root = real_data("ade20k_mini")
    dataset = build_dataset("ade20k", root / "ADEChallengeData2016" if inner else root, "val")
    assert len(dataset) == 3 and dataset.meta.num_classes == 150
    sample = dataset[0]
    raw = read_label(dataset.files[0][1])
    expected = np.where(raw == 0, 255, raw.astype(int) - 1)
    assert np.array_equal(sample["label"], expected) and sample["label"].dtype == np.uint8
    assert sample["image"].shape == (*raw.shape, 3) and sample["path"].endswith("ADE_val_00000001.jpg")
    assert len(build_dataset("ade20k", root, "train")) == 3


def test_cityscapes_label_ids_give_the_same_train_ids(tmp_path):
    root = real_data("cityscapes_mini")
    with_train_ids = build_dataset("cityscapes", root, "val")
    assert with_train_ids.files[0][1].name.endswith("_gtFine_labelTrainIds.png")
    copy = shutil.copytree(root, tmp_path / "cityscapes")
    for path in copy.rglob("*_labelTrainIds.png"):
        path.unlink()
    from_ids = build_dataset("cityscapes", copy, "val")
    assert from_ids.files[0][1].name.endswith("_gtFine_labelIds.png")
    derived, official = from_ids[0]["label"], with_train_ids[0]["label"]
    assert set(np.unique(derived).tolist()) <= set(range(19)) | {255}
    # The mini frame's two PNGs were downscaled separately, so ~0.2 % of (boundary) pixels disagree; on each
    # label id's pixels the official train id must still be the one the table gives.
    assert (derived == official).mean() > 0.99
    label_ids = read_label(from_ids.files[0][1])
    for label_id in np.unique(label_ids):
        pixels = label_ids == label_id
        assert np.bincount(official[pixels]).argmax() == derived[pixels][0]


def test_camvid_pairs_any_extension_and_ignores_unlabelled():
    root = real_data("camvid")
    train, val = build_dataset("camvid", root, "train"), build_dataset("camvid", root, "val")
    assert (len(train), len(val)) == (367, 101)
    assert {img.suffix for img, _ in train.files} == {".jpg"} and {img.suffix for img, _ in val.files} == {
        ".webp"
    }
    assert all(img.stem == label.stem for img, label in train.files + val.files)
    for dataset, index in ((train, 0), (val, 50)):
        sample = dataset[index]
        raw = read_label(dataset.files[index][1])
        assert sample["image"].shape == (360, 480, 3)
        assert set(np.unique(sample["label"]).tolist()) <= set(range(11)) | {255}
        assert np.array_equal(sample["label"], np.where(raw == 11, 255, raw))


def test_dataset_with_train_transform_returns_tensors():
    root = real_data("ade20k_mini")
    transform = TrainTransform((64, 64), scale=(256, 64), ratios=(0.5, 1.0), cat_max_ratio=0.75, seed=0)
    sample = build_dataset("ade20k", root, "train", transform=transform)[1]
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert sample["label"].shape == (64, 64) and sample["label"].dtype == torch.int64
    assert sample["path"].endswith(".jpg")


# ------------------------------------------------------------------------------------------ COCO-Stuff
def test_prepare_coco_stuff_10k_from_synthetic_release(tmp_path):
    from scipy.io import savemat

    src = tmp_path / "cocostuff-10k-v1.1"
    ids = {"COCO_train2014_000000000001": np.array([[0, 1, 13], [182, 92, 182]], np.uint16),
           "COCO_test2014_000000000002": np.array([[11, 14]], np.uint16)}  # fmt: skip
    for name, array in ids.items():
        save(src / "images" / f"{name}.jpg", noise(*array.shape))
        (src / "annotations").mkdir(exist_ok=True)
        savemat(src / "annotations" / f"{name}.mat", {"S": array})
    (src / "imageLists").mkdir()
    (src / "imageLists" / "train.txt").write_text("COCO_train2014_000000000001\n")
    (src / "imageLists" / "test.txt").write_text("COCO_test2014_000000000002\n")

    assert prepare_coco_stuff_10k(src, tmp_path / "out") == {"train": 1, "test": 1}
    png = tmp_path / "out/annotations/train2014/COCO_train2014_000000000001_labelTrainIds.png"
    # clsID_to_trID: 0->0, 1->1, 13->12 (12 absent), 182->171, 92->81 (11 absent ids below 92), 182 again
    assert read_label(png).tolist() == [[0, 1, 12], [171, 81, 171]]
    train = build_dataset("coco-stuff-10k", tmp_path / "out", "train")
    label = train[0]["label"]
    assert label.tolist() == [[255, 0, 11], [170, 80, 170]]
    assert [train.meta.classes[k] for k in (11, 80, 170)] == ["stop sign", "banner", "wood"]
    assert build_dataset("coco-stuff-10k", tmp_path / "out", "test")[0]["label"].tolist() == [[10, 12]]
    assert main(["data", "prepare", "coco-stuff-10k", str(src), str(tmp_path / "cli")]) == 0
    assert (
        read_label(tmp_path / "cli" / png.relative_to(tmp_path / "out")).tolist() == read_label(png).tolist()
    )


def test_median_frequency_weights_on_the_real_camvid_sample(capsys):
    root = Path(__file__).resolve().parents[1] / "examples" / "camvid_sample"
    labels = [np.asarray(Image.open(p)) for p in sorted((root / "trainannot").iterdir())]
    pixels = sum(np.bincount(a.ravel(), minlength=12)[:11] for a in labels)
    image_pixels = sum((np.bincount(a.ravel(), minlength=12)[:11] > 0) * a.size for a in labels)
    freq = pixels / image_pixels
    expected = np.sqrt(np.median(freq) / freq)
    expected /= (expected * pixels).sum() / pixels.sum()
    weights = median_frequency_weights(build_dataset("camvid", root, "train"))
    np.testing.assert_allclose(weights, expected, atol=1e-4)
    assert weights[2] > 2 > 1 > weights[3]  # Pole is rare, Road common
    assert main(["data", "class-weights", "camvid", "--data-root", str(root)]) == 0
    assert f"train.class_weight={json.dumps(weights)}" in capsys.readouterr().out


def test_prepare_coco_stuff_10k_rejects_absent_ids(tmp_path):
    from scipy.io import savemat

    src = tmp_path / "src"
    save(src / "images" / "x.jpg", noise(1, 2))
    (src / "annotations").mkdir()
    savemat(src / "annotations" / "x.mat", {"S": np.array([[12, 5]], np.uint8)})
    (src / "imageLists").mkdir()
    (src / "imageLists" / "train.txt").write_text("x\n")
    (src / "imageLists" / "test.txt").write_text("")
    with pytest.raises(DataError, match=r"x\.mat: ids \[12\]"):
        prepare_coco_stuff_10k(src, tmp_path / "out")
    savemat(src / "annotations" / "x.mat", {"labels": np.array([[1, 5]], np.uint8)})
    with pytest.raises(DataError, match="no 'S'"):
        prepare_coco_stuff_10k(src, tmp_path / "out")


# ----------------------------------------------------------------------------------- folder datasets
def test_folder_dataset_with_classes_json_object(tmp_path):
    spec = {
        "classes": ["bg", "cat"],
        "palette": [[0, 0, 0], [255, 0, 0]],
        "reduce_zero_label": True,
        "name": "pets",
    }
    root = folder_dataset(tmp_path / "pets", {"a": np.array([[0, 1], [2, 255]], np.uint8)}, spec)
    dataset = build_dataset("folder", root, "train")
    assert dataset.meta == DatasetMeta(
        "pets", ("bg", "cat"), ((0, 0, 0), (255, 0, 0)), reduce_zero_label=True
    )
    assert dataset[0]["label"].tolist() == [[255, 0], [1, 255]]


def test_folder_dataset_with_classes_txt_and_default_palette(tmp_path):
    root = tmp_path / "mine"
    folder_dataset(root, {"b": np.array([[0, 2]], np.uint8), "a": np.array([[1, 1]], np.uint8)})
    (root / "classes.json").unlink()
    (root / "classes.txt").write_text("road\nsky\n\ncar\n")
    dataset = build_dataset("folder", root, "train")
    assert dataset.meta.classes == ("road", "sky", "car") and len(set(dataset.meta.palette)) == 3
    assert [img.stem for img, _ in dataset.files] == ["a", "b"]


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ({"classes": ["a"], "reduce_zero_labels": True}, "unknown keys"),
        ({"classes": ["a", "b"], "palette": [[0, 0, 0]]}, "palette"),
        ({"classes": []}, "non-empty list"),
        ([f"c{i}" for i in range(256)], "allow 255"),
    ],
)
def test_bad_classes_files_raise(tmp_path, classes, message):
    root = folder_dataset(tmp_path / "d", {"a": np.zeros((2, 2), np.uint8)}, classes)
    with pytest.raises(DataError, match=message) as info:
        build_dataset("folder", root, "train")
    assert "classes.json" in str(info.value)


def test_unknown_label_values_error_or_ignore(tmp_path):
    root = folder_dataset(tmp_path / "d", {"a": np.array([[0, 7], [9, 255]], np.uint8)})
    with pytest.raises(DataError, match=r"a\.png: label values \[7, 9\] are not classes"):
        build_dataset("folder", root, "train")[0]
    assert build_dataset("folder", root, "train", unknown_label="ignore")[0]["label"].tolist() == [
        [0, 255],
        [255, 255],
    ]
    with pytest.raises(ConfigError, match="unknown_label"):
        build_dataset("folder", root, "train", unknown_label="drop")


def test_size_mismatch_names_both_files(tmp_path):
    root = folder_dataset(tmp_path / "d", {"a": np.zeros((4, 6), np.uint8)})
    save(root / "masks" / "train" / "a.png", np.zeros((6, 4), np.uint8))
    with pytest.raises(DataError, match=r"a\.jpg is 4x6 but its label .*a\.png is 6x4"):
        build_dataset("folder", root, "train")[0]


def test_missing_and_orphan_files_fail_at_construction(tmp_path):
    root = folder_dataset(tmp_path / "d", {"a": np.zeros((2, 2), np.uint8), "b": np.zeros((2, 2), np.uint8)})
    (root / "masks" / "train" / "b.png").rename(root / "masks" / "train" / "c.png")
    with pytest.raises(DataError, match=r"b\.jpg: no label b\.\*"):
        build_dataset("folder", root, "train")
    (root / "masks" / "train" / "c.png").rename(root / "masks" / "train" / "b.png")
    save(root / "images" / "train" / "a.png", noise(2, 2))
    with pytest.raises(DataError, match=r"a\.jpg and .*a\.png: two files for the same name"):
        build_dataset("folder", root, "train")


def test_orphan_label_and_odd_extensions_fail(tmp_path):
    root = folder_dataset(tmp_path / "d", {"a": np.zeros((2, 2), np.uint8)})
    save(root / "masks" / "train" / "z.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match=r"z\.png: no image z\.\*"):
        build_dataset("folder", root, "train")
    (root / "masks" / "train" / "z.png").unlink()
    (root / "images" / "train" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt: not an image extension"):
        build_dataset("folder", root, "train")


def test_empty_or_missing_folders_fail(tmp_path):
    root = folder_dataset(tmp_path / "d", {})
    (root / "images" / "train").mkdir(parents=True)
    (root / "masks" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"images/train: no image files"):
        build_dataset("folder", root, "train")
    with pytest.raises(DataError, match=r"images/val: folder not found"):
        build_dataset("folder", root, "val")
    with pytest.raises(DataError, match="no classes.json or classes.txt"):
        build_dataset("folder", tmp_path, "train")
    with pytest.raises(ConfigError, match="splits train, val"):
        build_dataset("ade20k", tmp_path, "test")


def test_bad_image_in_dataset_names_the_file(tmp_path):
    root = folder_dataset(tmp_path / "d", {"a": np.zeros((2, 2), np.uint8)})
    (root / "images" / "train" / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"a\.jpg: empty file"):
        build_dataset("folder", root, "train")[0]
