"""What a new user meets: predict never overwrites a user's file and names outputs uniquely, readable outputs
(legends, titled priors, train header/summary/curves), errors that say what a file is, one public loader."""

import contextlib
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import semask
from semask.cli import main
from semask.configs import load_config
from semask.data.meta import get_meta
from semask.engine import report
from semask.engine.train import train
from semask.errors import CheckpointError
from semask.tools.visualize import class_rows, overlay, priors_grid

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "camvid_sample"
CAMVID = get_meta("camvid")
TINY = [
    f"data.root={SAMPLE}",
    "model.arch=semask_swin_test_fpn",
    "data.crop_size=(64, 96)",
    "data.scale=(160, 120)",
    "eval.scale=(160, 120)",
    "data.num_workers=0",
    "train.batch_size=2",
    "train.max_iters=2",
    "train.warmup_iters=1",
    "train.log_interval=1",
    "train.amp=none",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    """A 2-iteration run of a tiny model on the CamVid sample, and what ``train`` printed."""
    out = tmp_path_factory.mktemp("run") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train(load_config("semask_swin_nano_fpn_camvid-demo", TINY), out, progress=False)
    return out, printed.getvalue()


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def photo(path: Path, size: tuple[int, int] = (96, 72)) -> Path:
    """A real CamVid photo, resized to (W, H), saved as ``path`` (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(SAMPLE / "train" / "0001TP_006690.jpg").resize(size).save(path)
    return path


# ------------------------------------------------------------------------------------------- 1, 2: predict
def test_predict_never_writes_over_an_input(run, tmp_path, capsys):
    folder = tmp_path / "imgs"
    inputs = [photo(folder / "0001TP_008550.png"), photo(folder / "other.jpg")]
    before = {p: md5(p) for p in inputs}
    for extra in ([], ["--overwrite"]):
        code, out, err = cli(capsys, "predict", run[0], folder, "--out", folder, *extra)
        assert code == 2 and out == ""
        assert err == (
            f"error: {folder / '0001TP_008550.png'} is an input image (1 output(s) would replace inputs); "
            "semask predict never writes over its inputs: choose another --out\n"
        )
        assert {p: md5(p) for p in inputs} == before and sorted(folder.iterdir()) == sorted(inputs)


def test_predict_refuses_existing_files_unless_overwrite(run, tmp_path, capsys):
    image, out = photo(tmp_path / "in" / "street.jpg"), tmp_path / "out"
    out.mkdir()
    (out / "street.png").write_bytes(b"the user's own file")
    code, printed, err = cli(capsys, "predict", run[0], image, "--out", out)
    assert (code, printed) == (2, "")
    assert err.startswith(
        f"error: {out / 'street.png'} exists (1 of the 2 output files do); pass --overwrite"
    )
    assert [p.name for p in out.iterdir()] == ["street.png"]
    assert (out / "street.png").read_bytes() == b"the user's own file"
    code, printed, err = cli(capsys, "predict", run[0], image, "--out", out, "--overwrite")
    assert (code, err) == (0, "") and Image.open(out / "street.png").mode == "P"


def test_predict_output_names_are_unique_per_input(run, tmp_path, capsys):
    folder = tmp_path / "imgs"
    for name, size in (("X.jpg", (96, 72)), ("X.png", (80, 60)), ("Y.png", (96, 72))):
        photo(folder / name, size)
    code, printed, err = cli(capsys, "predict", run[0], folder, "--out", tmp_path / "out", "--priors")
    assert (code, err) == (0, "")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(
        f"{stem}{tail}"
        for stem in ("X_jpg", "X_png", "Y")
        for tail in (".png", "_overlay.jpg", "_priors.png")
    )
    assert Image.open(tmp_path / "out" / "X_jpg.png").size == (96, 72)
    assert Image.open(tmp_path / "out" / "X_png.png").size == (80, 60)  # not replaced by the other X
    assert f"{folder / 'X.png'} -> {tmp_path / 'out' / 'X_png.png'}" in printed


def test_same_file_name_in_two_folders_is_refused_before_writing(run, tmp_path, capsys):
    a, b = photo(tmp_path / "a" / "X.jpg"), photo(tmp_path / "b" / "X.jpg")
    code, printed, err = cli(capsys, "predict", run[0], a, b, "--out", tmp_path / "out")
    assert (code, printed) == (2, "")
    assert (
        err
        == f"error: {a} and {b} would both write {tmp_path / 'out' / 'X_jpg.png'}; predict them into separate --out folders\n"
    )
    assert not (tmp_path / "out").exists()


def test_predict_help_documents_the_naming(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    assert "photo.jpg, photo.png -> photo_jpg.png, photo_png.png" in text and "--overwrite" in text


# ------------------------------------------------------------------------------------ 3: readable pictures
def test_predict_outputs_legend_titles_and_palette(run, tmp_path, capsys):
    image = photo(tmp_path / "street.jpg")
    for out, extra in ((tmp_path / "legend", []), (tmp_path / "raw", ["--no-legend"])):
        assert cli(capsys, "predict", run[0], image, "--out", out, "--priors", *extra)[0] == 0
    label = Image.open(tmp_path / "legend" / "street.png")
    assert label.mode == "P" and label.getpalette()[: 3 * 11] == [v for c in CAMVID.palette for v in c]
    raw_overlay = Image.open(tmp_path / "raw" / "street_overlay.jpg")
    raw_priors = Image.open(tmp_path / "raw" / "street_priors.png")
    assert raw_overlay.size == (96, 72) and raw_priors.size == (192, 144)
    overlay_img = Image.open(tmp_path / "legend" / "street_overlay.jpg")
    priors_img = Image.open(tmp_path / "legend" / "street_priors.png")
    assert overlay_img.width > 96 + 40 and overlay_img.height >= 72
    assert priors_img.width > 192 + 40 and priors_img.height > 144  # titles above the tiles, key to the right


def test_overlay_legend_lists_the_classes_present_with_their_area():
    label = np.zeros((20, 40), np.int64)
    label[:, 30:] = 3  # Road on a quarter
    label[0, 0] = 9  # one Pedestrian pixel
    rows = class_rows(label, CAMVID.palette, CAMVID.classes)
    assert rows == [
        (CAMVID.palette[0], "Sky (74.9%)"),
        (CAMVID.palette[3], "Road (25.0%)"),
        (CAMVID.palette[9], "Pedestrian (0.1%)"),
    ]
    image = np.full((20, 40, 3), 128, np.uint8)
    picture = np.asarray(overlay(image, label, CAMVID.palette, 0.5, CAMVID.classes))
    panel = {tuple(int(v) for v in px) for px in picture[:, 40:].reshape(-1, 3)}
    assert {tuple(CAMVID.palette[k]) for k in (0, 3, 9)} <= panel  # the swatches
    assert tuple(CAMVID.palette[5]) not in panel  # Tree is not in the picture
    assert np.array_equal(picture[:20, :40], np.asarray(overlay(image, label, CAMVID.palette, 0.5)))


def test_priors_grid_titles_and_key():
    priors = [np.full((30, 40), k, np.int64) for k in (0, 1, 1, 2)]
    raw = np.asarray(priors_grid(priors, CAMVID.palette))
    assert raw.shape == (60, 80, 3) and tuple(raw[45, 60]) == CAMVID.palette[2]
    titled = np.asarray(priors_grid(priors, CAMVID.palette, CAMVID.classes))
    assert titled.shape[0] > 60 and titled.shape[1] > 80
    strip = titled[:5, :40]
    assert (strip < 128).any() and (strip == 255).any()  # dark title text on a white strip
    key = {tuple(int(v) for v in px) for px in titled[:, 80:].reshape(-1, 3)}
    assert {CAMVID.palette[k] for k in (0, 1, 2)} <= key and CAMVID.palette[3] not in key


# -------------------------------------------------------------------------------------- 4: train report
def test_train_prints_a_header_and_the_next_commands(run):
    out, printed = run
    lines = printed.splitlines()
    assert lines[0] == "semask train semask_swin_nano_fpn_camvid-demo"
    for expected in (
        f"dataset:    camvid in {SAMPLE}",
        "splits:     62 train images, 10 val images",
        "classes:    11: Sky, Building, Pole,",
        "model:      semask_swin_test_fpn, 1.08 M parameters, from scratch",
        "device:     cpu, ",
        "precision:  fp32 as configured",
        "batch:      2 crops of 64x96",
        "iterations: 2 (evaluation every",
        f"run folder: {out} (",
    ):
        assert any(line.startswith("  " + expected) for line in lines), expected
    best = max(json.loads(r)["mIoU"] for r in (out / "metrics.jsonl").read_text().splitlines() if "mIoU" in r)
    assert f"best mIoU {best:.2f} at iteration 2 ({out / 'best.pt'})" in lines
    assert f"  semask eval {out} --data-root {SAMPLE}" in lines
    assert f"  semask predict {out} {SAMPLE / 'val'} --out {out / 'predictions'}" in lines
    assert f"curves: {out / 'curves.png'}" in lines
    assert Image.open(out / "curves.png").size == (1000, 400)


def test_curves_without_matplotlib_say_how_to_get_them(tmp_path, monkeypatch):
    rows = [
        {"iter": 1, "loss": 2.0},
        {"iter": 2, "loss": 1.5},
        {"iter": 2, "mIoU": 10.0},
        {"iter": 2, "loss": 1.4},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    message = report.save_curves(tmp_path)
    assert (
        message
        == "curves.png not written: matplotlib is not installed (pip install matplotlib, or semask[plots])"
    )
    assert not (tmp_path / "curves.png").exists()


# ------------------------------------------------------------------------------------ 5-8: clear errors
def test_a_config_json_is_named_and_the_right_argument_suggested(run, tmp_path, capsys):
    out = run[0]
    expected = f"{out / 'config.json'}: is a run's config file, not weights; pass the run folder {out} or {out / 'best.pt'}"
    with pytest.raises(CheckpointError) as info:
        semask.load(out / "config.json")
    assert str(info.value) == expected
    code, printed, err = cli(
        capsys, "predict", out / "config.json", photo(tmp_path / "x.jpg"), "--out", tmp_path / "o"
    )
    assert (code, printed, err) == (2, "", f"error: {expected}\n")
    semask.save_model(semask.load(out), tmp_path / "m.safetensors")
    with pytest.raises(
        CheckpointError, match=r"m\.json: is the model config written beside m\.safetensors, not weights"
    ):
        semask.load(tmp_path / "m.json")
    (tmp_path / "notes.pt").write_text('{"a": 1}')
    with pytest.raises(CheckpointError, match=r"notes\.pt: is a JSON text file, not weights") as info:
        semask.load(tmp_path / "notes.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"text\.pt: not a readable torch checkpoint") as info:
        semask.load(tmp_path / "text.pt")
    assert "weights_only" not in str(info.value)


def test_eval_on_a_missing_split_lists_the_splits_found(run, tmp_path, capsys):
    root = tmp_path / "camvid"
    (root / "test").mkdir(parents=True)
    (root / "testannot").mkdir()
    for name in sorted((SAMPLE / "val").iterdir())[:2]:
        shutil.copy(name, root / "test")
        shutil.copy(SAMPLE / "valannot" / f"{name.stem}.png", root / "testannot")
    code, printed, err = cli(capsys, "eval", run[0], "--data-root", root)
    assert (code, printed) == (2, "")
    assert (
        err
        == f"error: {root / 'val'}: folder not found; {root} has the camvid split(s) test: evaluate one with --split test\n"
    )
    code, printed, err = cli(capsys, "eval", run[0], "--data-root", root, "--split", "test", "--json")
    assert (code, err) == (0, "") and 0 <= json.loads(printed)["mIoU"] <= 100


def test_convert_a_directory_says_it_is_one(tmp_path, capsys):
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "swin_tiny_patch4_window7_224.pth").write_bytes(b"")
    code, printed, err = cli(
        capsys, "convert", tmp_path / "release", tmp_path / "s.safetensors", "--from", "swin-imagenet"
    )
    assert (code, printed) == (2, "")
    assert err == (
        f"error: {tmp_path / 'release'}: is a directory, not a checkpoint file "
        "(it holds swin_tiny_patch4_window7_224.pth: pass one of them)\n"
    )


def test_load_model_reads_every_kind_of_file(run, tmp_path):
    out = run[0]
    from_file, info = semask.load(out / "best.pt", with_info=True)
    assert not from_file.training and info["classes"] == list(CAMVID.classes)
    assert info["palette"] == [list(c) for c in CAMVID.palette]
    from_run = semask.load(out)
    semask.save_model(from_file, tmp_path / "m.safetensors", classes=info["classes"], palette=info["palette"])
    from_safetensors, sidecar = semask.load(tmp_path / "m.safetensors", with_info=True)
    assert (
        sidecar["classes"] == info["classes"] and sidecar["palette"] == info["palette"]
    )  # the sidecar carries them
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        ref = from_file.predict_logits(x)
        for model in (from_run, from_safetensors):
            torch.testing.assert_close(model.predict_logits(x), ref, rtol=0, atol=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        CheckpointError, match=r"empty: a folder without best\.pt or last\.pt \(not a run folder\)"
    ):
        semask.load(tmp_path / "empty")


# ------------------------------------------------------------------------------------------ 10: listing
def test_list_hides_internal_test_models(capsys):
    code, printed, _ = cli(capsys, "list")
    assert code == 0 and "semask_swin_tiny_fpn" in printed.split() and "_test_" not in printed
    code, printed, _ = cli(capsys, "list", "--all")
    assert code == 0 and "semask_swin_test_fpn" in printed.split()
