"""Reliability and safety: every bad input gives one ``error:`` line naming the file (exit code != 0, no
traceback), interrupted or failing training loses no finished iteration, and checkpoints never run code.

CLI tests call ``semask.cli.main`` in-process (capturing stderr); the kill/signal tests run ``semask train`` as a
subprocess on the bundled CamVid sample with the tiny settings of ``test_train.py``.
"""

import contextlib
import errno
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from test_train import SAMPLE, TINY, _cfg

import semask
from semask.cli import main
from semask.data.io import image_size, read_image
from semask.engine.train import train
from semask.errors import CheckpointError, ConfigError, DataError, SemaskError
from semask.registry import PRETRAINED, PretrainedCfg
from semask.weights import file_sha256, load_checkpoint, read_checkpoint, save_atomic, save_model
from semask.weights import load as load_model

PRESET = "semask_swin_nano_fpn_camvid-demo"
# --data-root gives the root; the CamVid class weights do not fit the other class counts used here
FOLDER_TINY = [o for o in TINY if not o.startswith("data.root")] + ["train.class_weight=None"]
ITERS = 8  # length of the interrupted runs (seconds on a CPU)


# ------------------------------------------------------------------------------------------- helpers
def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    """``semask ARGV`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_error_lines(err: str, *named: object) -> list[str]:
    """stderr holds only ``error:`` lines, no traceback; each ``named`` item appears in one of them."""
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), err
    assert "Traceback" not in err
    for item in named:
        assert any(str(item) in line for line in lines), (item, err)
    return lines


def assert_one_error(code: int, err: str, *named: object) -> str:
    """A failed command: non-zero exit, exactly one ``error:`` line naming every ``named`` item."""
    assert code != 0
    lines = assert_error_lines(err, *named)
    assert len(lines) == 1, err
    return lines[0]


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def save(path: Path, pixels: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)
    return path


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def huge_png(path: Path, width: int, height: int) -> Path:
    """A valid all-black 1-bit PNG of any size, written row by row: a few KB on disk, no image in memory."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    row, packer = bytes(1 + (width + 7) // 8), zlib.compressobj(9)  # filter byte + packed bits
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


def folder_dataset(
    root: Path, masks: dict[str, np.ndarray], splits: tuple[str, ...] = ("train", "val")
) -> Path:
    """A ``folder`` dataset of classes a, b, c: one noise image (mask-sized) per mask, in every split."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps(["a", "b", "c"]))
    for split in splits:
        for stem, mask in masks.items():
            save(root / "images" / split / f"{stem}.jpg", noise(*mask.shape))
            save(root / "masks" / split / f"{stem}.png", mask)
    return root


def good_mask(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, (60, 80), dtype=np.uint8)


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny 3-class model as converted weights (``.safetensors`` + ``.json``)."""
    torch.manual_seed(0)
    model = semask.create_model("semask_swin_test_fpn", num_classes=3)
    return save_model(model, tmp_path_factory.mktemp("model") / "k3.safetensors")


# ------------------------------------------------------------------------- 1. images and labels: reading
def test_huge_image_is_refused_from_its_header(tmp_path, monkeypatch):
    path = huge_png(tmp_path / "huge.png", 12000, 9000)
    assert path.stat().st_size < 100_000
    assert image_size(path) == (9000, 12000)

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(DataError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: 9000x12000 (HxW)") and "108.0 M pixels" in message
    assert "limit of 67.1 M pixels" in message and "--max-pixels" in message and "--mode slide" in message


def test_decompression_bomb_is_a_data_error_naming_the_file(tmp_path):
    path = huge_png(tmp_path / "bomb.png", 20000, 10000)  # above 2 x Image.MAX_IMAGE_PIXELS
    for reader in (lambda p: read_image(p, max_pixels=None), image_size):
        with pytest.raises(DataError, match="too large to decode safely") as info:
            reader(path)
        assert str(info.value).startswith(str(path))


def test_predict_reads_every_image_mode(tmp_path, model_file, capsys):
    inputs = tmp_path / "in"
    save(inputs / "gray.png", noise(30, 40)[:, :, 0])
    save(inputs / "sixteen.png", (noise(30, 40)[:, :, 0].astype(np.uint16) * 257))
    save(inputs / "rgba.png", np.dstack([noise(30, 40), np.full((30, 40), 128, np.uint8)]))
    save(inputs / "bilevel.png", noise(30, 40)[:, :, 0] > 127)
    Image.fromarray(noise(30, 40)).convert("P").save(inputs / "palette.png")
    Image.fromarray(noise(30, 40)).convert("CMYK").save(inputs / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: the image is 40 high and 30 wide
    save(inputs / "rotated.jpg", noise(30, 40), exif=exif)
    code, out, err = run_cli(capsys, "predict", model_file, inputs, "--out", tmp_path / "out", "--no-legend")
    assert (code, err) == (0, "")
    for name in ("gray", "sixteen", "rgba", "bilevel", "palette", "cmyk"):
        assert Image.open(tmp_path / "out" / f"{name}.png").size == (40, 30), name
    assert Image.open(tmp_path / "out" / "rotated.png").size == (30, 40)
    assert Image.open(tmp_path / "out" / "rotated_overlay.jpg").size == (30, 40)


def test_predict_folder_processes_good_files_and_lists_bad_ones(tmp_path, model_file, capsys):
    inputs = tmp_path / "in"
    save(inputs / "good.png", noise(30, 40))
    save(inputs / "later.jpg", noise(30, 40))
    (inputs / "empty.png").write_bytes(b"")
    (inputs / "text.jpg").write_text("not an image")
    for name in ("cut.png", "cut2.jpg"):
        path = save(inputs / name, noise(64, 64))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    huge_png(inputs / "huge.png", 12000, 9000)
    code, out, err = run_cli(capsys, "predict", model_file, inputs, "--out", tmp_path / "out")
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["good.png", "later.png"]
    lines = assert_error_lines(err, "empty.png: empty file", "text.jpg: not an image", "huge.png: 9000x12000")
    assert_error_lines(err, "cut.png: corrupt or truncated", "cut2.jpg: corrupt or truncated")
    assert len(lines) == 5 and "segmented 2 of 7 images; 5 failed" in out


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        ("empty.jpg", lambda p: p.write_bytes(b""), "empty file"),
        ("notes.png", lambda p: p.write_text("hello"), "not an image"),
        ("cut.png", lambda p: p.write_bytes(save(p, noise(64, 64)).read_bytes()[:6000]), "truncated"),
        ("absent.png", lambda p: None, "no such file"),
        ("huge.png", lambda p: huge_png(p, 12000, 9000), "--max-pixels"),
    ],
)
def test_predict_on_one_bad_file_is_one_error_line(tmp_path, model_file, capsys, name, make, problem):
    path = tmp_path / name
    make(path)
    code, _, err = run_cli(capsys, "predict", model_file, path, "--out", tmp_path / "out")
    assert problem in assert_one_error(code, err, path)


def test_the_semask_process_prints_one_line_and_debug_shows_the_traceback(tmp_path, model_file, capsys):
    (tmp_path / "empty.png").write_bytes(b"")
    command = [sys.executable, "-m", "semask", "predict", str(model_file), str(tmp_path / "empty.png")]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*command, "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True)
    assert proc.stderr == f"error: {tmp_path / 'empty.png'}: empty file (0 bytes)\n" and proc.returncode == 1
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04" + bytes(100))
    code, _, err = run_cli(capsys, "eval", tmp_path / "cut.pt", "--data-root", SAMPLE)
    assert code == 2 and err.startswith(f"error: {tmp_path / 'cut.pt'}: not a readable torch checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        main(["--debug", "eval", str(tmp_path / "cut.pt"), "--data-root", str(SAMPLE)])


def test_predict_without_inputs_or_priors_fails_cleanly(tmp_path, model_file, capsys):
    (tmp_path / "none").mkdir()
    code, _, err = run_cli(capsys, "predict", model_file, tmp_path / "none", "--out", tmp_path / "out")
    assert "no input images found" in assert_one_error(code, err, tmp_path / "none")
    plain_model = semask.create_model("semask_swin_test_fpn", num_classes=3, semantic_attention=None)
    plain = save_model(plain_model, tmp_path / "plain.safetensors")
    save(tmp_path / "x.png", noise(8, 8))
    code, _, err = run_cli(
        capsys, "predict", plain, tmp_path / "x.png", "--out", tmp_path / "out", "--priors"
    )
    assert_one_error(code, err, "--priors", plain)


# ---------------------------------------------------------------------- 1. datasets through the CLI
def test_eval_unknown_label_values_error_or_ignore(tmp_path, model_file, capsys):
    mask = good_mask()
    mask[0, :3] = [7, 9, 7]
    root = folder_dataset(tmp_path / "d", {"a": good_mask(1), "b": mask}, splits=("val",))
    args = ["eval", model_file, "--dataset", "folder", "--data-root", root, "--json"]
    code, _, err = run_cli(capsys, *args)
    line = assert_one_error(code, err, root / "masks" / "val" / "b.png", "[7, 9]")
    assert "--unknown-label ignore" in line
    code, out, err = run_cli(capsys, *args, "--unknown-label", "ignore")
    assert (code, err) == (0, "") and 0 <= json.loads(out)["aAcc"] <= 100


@pytest.mark.parametrize(
    ("problem", "named"),
    [
        ("size", "b.jpg is 60x80 but its label"),
        ("no label", "b.jpg: no label b.*"),
        ("empty folder", "images/val: no image files"),
        ("zero bytes", "b.jpg: empty file"),
        ("truncated", "b.jpg: corrupt or truncated image"),
        ("class count", "predicts 3 classes but the camvid dataset"),
    ],
)
def test_eval_bad_datasets_give_one_error_line(tmp_path, model_file, capsys, problem, named):
    root = folder_dataset(tmp_path / "d", {"a": good_mask(1), "b": good_mask(2)}, splits=("val",))
    image, mask, dataset = root / "images" / "val" / "b.jpg", root / "masks" / "val" / "b.png", "folder"
    if problem == "size":
        save(mask, np.zeros((80, 60), np.uint8))
    elif problem == "no label":
        mask.unlink()
    elif problem == "empty folder":
        for path in (root / "images" / "val").iterdir():
            path.unlink()
    elif problem == "zero bytes":
        image.write_bytes(b"")
    elif problem == "truncated":
        image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    else:
        root, dataset = SAMPLE, "camvid"
    code, _, err = run_cli(capsys, "eval", model_file, "--dataset", dataset, "--data-root", root)
    assert_one_error(code, err, named)


def test_train_unknown_labels_fail_or_are_ignored_with_set(tmp_path, capsys):
    mask = good_mask()
    mask[5, 5] = 200
    root = folder_dataset(tmp_path / "d", {"a": good_mask(1), "b": mask})
    base = ["train", PRESET, "--no-progress", "--data-root", root]
    overrides = sets([*FOLDER_TINY, "data.dataset='folder'", "model.num_classes=3", "train.max_iters=1"])
    code, _, err = run_cli(capsys, *base, "--out", tmp_path / "r1", *overrides)
    line = assert_one_error(code, err, root / "masks" / "train" / "b.png", "[200]")
    assert "--set data.unknown_label=ignore" in line and "training stopped after iteration 0" in line
    code, out, err = run_cli(
        capsys, *base, "--out", tmp_path / "r2", *overrides, "--set", "data.unknown_label='ignore'"
    )
    assert (code, err) == (0, "") and "mIoU" in out
    assert load_checkpoint(tmp_path / "r2" / "last.pt")["iteration"] == 1


def test_train_bad_files_give_one_error_line(tmp_path, capsys):
    root = folder_dataset(tmp_path / "d", {"a": good_mask(1), "b": good_mask(2)})
    base = ["train", PRESET, "--no-progress", "--data-root", root]
    overrides = [*FOLDER_TINY, "data.dataset='folder'", "model.num_classes=3", "train.max_iters=1"]
    (root / "images" / "train" / "b.jpg").write_bytes(b"")  # met in a DataLoader worker process
    code, _, err = run_cli(capsys, *base, "--out", tmp_path / "r1", *sets([*overrides, "data.num_workers=1"]))
    assert "no checkpoint was written" in assert_one_error(code, err, root / "images" / "train" / "b.jpg")
    for path in (root / "images" / "val").iterdir():  # an empty folder: refused before anything is written
        path.unlink()
    code, _, err = run_cli(capsys, *base, "--out", tmp_path / "r2", *sets(overrides))
    assert_one_error(code, err, root / "images" / "val")
    assert not (tmp_path / "r2").exists()


def test_bad_file_mid_training_keeps_the_finished_iterations(tmp_path, monkeypatch):
    from semask.data.datasets import SegDataset

    real_load, calls = SegDataset.load, []

    def load(self, index):
        calls.append(index)
        if len(calls) == 9:  # first sample of iteration 2 (batch 4)
            raise DataError(f"{self.files[index][0]}: corrupt or truncated image (simulated)")
        return real_load(self, index)

    monkeypatch.setattr(SegDataset, "load", load)
    with pytest.raises(DataError, match="training stopped after iteration 2; .*last.pt holds iteration 2"):
        train(_cfg("train.max_iters=4", "train.ckpt_interval=100"), tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 2


# ------------------------------------------------------------------------------ 2. interrupted training
def train_command(out: Path, *extra: str) -> list[str]:
    overrides = [*TINY, f"train.max_iters={ITERS}", "train.ckpt_interval=1", *extra]
    base = [sys.executable, "-m", "semask", "train", PRESET, "--no-progress"]
    return [*base, "--data-root", str(SAMPLE), "--out", str(out), *sets(overrides)]


def start_and_wait_for_checkpoint(out: Path) -> subprocess.Popen:
    """Start ``semask train`` and return once it has written ``last.pt``."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(train_command(out), env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "last.pt").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)
    return proc


@contextlib.contextmanager
def one_thread():
    """In-process training with the thread count of the OMP_NUM_THREADS=1 subprocesses: the float summation
    order, and so the exact weights, depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """Run folder of the interrupted runs' settings, trained without interruption."""
    out = tmp_path_factory.mktemp("straight")
    with one_thread():
        train(_cfg(f"train.max_iters={ITERS}"), out, progress=False)
    return out


def test_sigkill_leaves_a_readable_checkpoint_and_resume_is_exact(tmp_path, straight_run):
    proc = start_and_wait_for_checkpoint(tmp_path)
    delay = random.uniform(0.0, 1.5)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    killed_at = load_checkpoint(tmp_path / "last.pt")["iteration"]  # the last complete checkpoint
    print(f"killed {delay:.2f} s after the first checkpoint; last.pt holds iteration {killed_at}")
    assert 1 <= killed_at <= ITERS
    with one_thread():
        train(
            _cfg(f"train.max_iters={ITERS}", "train.ckpt_interval=1"), tmp_path, resume=True, progress=False
        )
    assert_same_weights(weights_of(tmp_path / "last.pt"), weights_of(straight_run / "last.pt"))
    assert not list(tmp_path.glob(".*.tmp")), "temp files of the killed save were not removed"


def test_sigterm_saves_a_final_checkpoint_and_says_where(tmp_path, straight_run):
    proc = start_and_wait_for_checkpoint(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    done = sum("loss" in row for row in rows)  # log_interval=1: one row per finished iteration
    assert proc.returncode == 130 and done < ITERS
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == done
    assert err.strip() == (
        f"interrupted: stopped by SIGTERM after iteration {done} of {ITERS}; checkpoint saved to "
        f"{tmp_path / 'last.pt'} (continue with --resume)"
    )
    with one_thread():
        train(_cfg(f"train.max_iters={ITERS}"), tmp_path, resume=True, progress=False)
    assert_same_weights(weights_of(tmp_path / "last.pt"), weights_of(straight_run / "last.pt"))


class FullDisk:
    """A file that accepts ``room`` bytes, then fails like a full disk (part of the last write lands)."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.file.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)


def fill_disk_on_save(monkeypatch, room: int, after: int = 0) -> None:
    """Make every ``torch.save`` after the first ``after`` ones hit a full disk after ``room`` bytes."""
    real_save, calls = torch.save, []

    def save_to_full_disk(obj, f, *args, **kwargs):
        calls.append(1)
        real_save(obj, f if len(calls) <= after else FullDisk(f, room), *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_to_full_disk)


@pytest.mark.parametrize("room", [0, 100, 5000])  # torch reports the failure as OSError or RuntimeError
def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch, room):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.arange(3.0)}, "model_config": {}}, path)
    before = path.read_bytes()
    fill_disk_on_save(monkeypatch, room)
    with pytest.raises(CheckpointError) as info:
        save_atomic({"model": {"w": torch.zeros(10_000)}, "model_config": {}}, path)
    assert str(info.value).startswith(f"{path}: cannot write the checkpoint: the disk is full")
    assert path.read_bytes() == before and torch.equal(load_checkpoint(path)["model"]["w"], torch.arange(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the temp file is gone


def test_disk_full_during_training_stops_with_the_previous_checkpoint(tmp_path, monkeypatch):
    fill_disk_on_save(monkeypatch, room=100_000, after=1)
    with pytest.raises(CheckpointError, match=r"last\.pt: cannot write the checkpoint: the disk is full"):
        train(_cfg("train.max_iters=3", "train.ckpt_interval=1"), tmp_path, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def nan_losses_at(monkeypatch, calls: set[int]) -> None:
    """Make the training loss NaN at the given (0-based) loss calls."""
    import semask.losses.fpn as engine

    real_loss, count = engine.semask_fpn_loss, []

    def loss(*args, **kwargs):
        losses = real_loss(*args, **kwargs)
        count.append(1)
        if len(count) - 1 in calls:
            losses["loss_ce"] = losses["loss_ce"] * float("nan")
        return losses

    monkeypatch.setattr(engine, "semask_fpn_loss", loss)


def test_non_finite_loss_stops_naming_the_iteration(tmp_path, monkeypatch):
    nan_losses_at(monkeypatch, {1})
    with pytest.raises(SemaskError, match=r"non-finite loss \(nan\) at iteration 1; .*max_nonfinite") as info:
        train(_cfg("train.max_iters=3", "train.ckpt_interval=100"), tmp_path, progress=False)
    assert "training stopped after iteration 1" in str(info.value)
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 1  # the finished iteration is kept


def test_non_finite_losses_are_skipped_and_counted(tmp_path, monkeypatch):
    nan_losses_at(monkeypatch, {0, 2})
    train(_cfg("train.max_iters=3", "train.max_nonfinite=2"), tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert (ckpt["iteration"], ckpt["nonfinite"]) == (3, 2)
    assert all(v.isfinite().all() for v in ckpt["model"].values() if v.is_floating_point())
    losses = [row["loss"] for row in map(json.loads, (tmp_path / "metrics.jsonl").open()) if "loss" in row]
    assert [np.isnan(v) for v in losses] == [True, False, True]


# ---------------------------------------------------------------------------- 3. checkpoints from strangers
class RunsCode:
    """Unpickling this (with weights_only=False) would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_pickles_that_run_code_are_refused(tmp_path, model_file, capsys):
    marker, path = tmp_path / "code-ran", tmp_path / "evil.pt"
    torch.save({"model": {}, "model_config": {}, "payload": RunsCode(marker)}, path)
    assert semask.convert.read_checkpoint is read_checkpoint  # one safe reader for every checkpoint
    with pytest.raises(
        CheckpointError, match=r"evil\.pt: the checkpoint pickles non-tensor objects \['posix\.mkdir'\]"
    ):
        load_checkpoint(path)
    for command in (["eval", path, "--data-root", SAMPLE], ["predict", path, model_file, "--out", tmp_path]):
        code, _, err = run_cli(capsys, *command)
        assert_one_error(code, err, path, "posix.mkdir")
    assert not marker.exists()


def test_official_checkpoints_with_numpy_objects_load(tmp_path):
    meta = {"PALETTE": np.array([[1, 2, 3]], np.uint8), "iter": np.int64(80000), "lr": np.float32(1e-4),
            "dtype": np.dtype("float32"), "CLASSES": ("a", "b")}  # fmt: skip
    torch.save({"meta": meta, "state_dict": {"w": torch.ones(2)}}, tmp_path / "official.pth")
    ckpt = read_checkpoint(tmp_path / "official.pth")
    assert ckpt["meta"]["iter"] == 80000 and ckpt["meta"]["PALETTE"].tolist() == [[1, 2, 3]]


def test_truncated_and_foreign_checkpoints_give_one_error_line(tmp_path, model_file, capsys):
    model = semask.create_model("semask_swin_test_fpn", num_classes=3)
    good = {"model": model.state_dict(), "model_config": model.cfg.to_dict()}
    torch.save(good, tmp_path / "cut.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "cut.pt").read_bytes()[:5000])
    torch.save({**good, "model_config": {**good["model_config"], "num_classes": 5}}, tmp_path / "k5.pt")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "official.pth")
    (tmp_path / "random.pt").write_bytes(os.urandom(3000))
    cases = {
        "cut.pt": "truncated or corrupt",
        "random.pt": "truncated or corrupt",
        "k5.pt": "weights do not fit the model: 18 shape mismatches (decode_head.conv_seg.weight: checkpoint "
        "(3, 32, 1, 1) vs model (5, 32, 1, 1)",
        "official.pth": "not a semask training checkpoint",
    }
    save(tmp_path / "x.png", noise(8, 8))
    for name, problem in cases.items():
        with pytest.raises(CheckpointError, match="^" + str(tmp_path / name)) as info:
            load_model(tmp_path / name)
        assert problem in str(info.value) and "\n" not in str(info.value)
        for command in ("eval", "predict"):
            extra = ["--data-root", SAMPLE] if command == "eval" else [tmp_path / "x.png", "--out", tmp_path]
            code, _, err = run_cli(capsys, command, tmp_path / name, *extra)
            assert problem in assert_one_error(code, err, tmp_path / name)


def test_converted_weights_that_do_not_fit_their_config(tmp_path, model_file):
    path = save_model(semask.create_model("semask_swin_test_fpn", num_classes=3), tmp_path / "m.safetensors")
    meta = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**meta, "model": {**meta["model"], "num_classes": 19}}))
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert (
        message.startswith(f"{path} (config m.json): weights do not fit the model: ") and "\n" not in message
    )
    assert "decode_head.conv_seg.weight: checkpoint (3, 32, 1, 1) vs model (19, 32, 1, 1)" in message


def test_resume_with_another_class_count_is_refused(straight_run):
    before = {name: (straight_run / name).read_bytes() for name in ("config.json", "last.pt")}
    with pytest.raises(CheckpointError, match=r"last\.pt: weights do not fit the model: .*decode_head"):
        cfg = _cfg(f"train.max_iters={ITERS + 1}", "model.num_classes=5", "train.class_weight=None")
        train(cfg, straight_run, resume=True)
    assert before == {name: (straight_run / name).read_bytes() for name in before}


def test_registered_weights_are_checked_by_sha256(tmp_path, model_file, monkeypatch):
    digest = file_sha256(model_file)
    monkeypatch.setenv("SEMASK_CACHE", str(model_file.parent))
    arch = "semask_swin_test_fpn"
    monkeypatch.setitem(PRETRAINED, f"{arch}.k3", PretrainedCfg(model_file.name, digest, {"num_classes": 3}))
    assert semask.load(f"{arch}.k3").num_classes == 3
    assert semask.create_model(f"{arch}.k3").num_classes == 3  # the architecture of the tag, random init
    monkeypatch.setitem(PRETRAINED, f"{arch}.k5", PretrainedCfg(model_file.name, digest, {"num_classes": 5}))
    with pytest.raises(CheckpointError, match=f"num_classes=3, but '{arch}.k5' has num_classes=5"):
        semask.load(f"{arch}.k5")
    monkeypatch.setitem(
        PRETRAINED, f"{arch}.bad", PretrainedCfg(model_file.name, "ab" * 32, {"num_classes": 3})
    )
    with pytest.raises(CheckpointError, match=f"SHA-256 is {digest}, expected {'ab' * 32}"):
        semask.load(f"{arch}.bad")
    monkeypatch.setitem(PRETRAINED, f"{arch}.gone", PretrainedCfg("absent.safetensors", digest))
    with pytest.raises(CheckpointError, match=r"absent\.safetensors: weights '.*\.gone' not found"):
        semask.load(f"{arch}.gone")
    with pytest.raises(ConfigError, match="'nope' is neither a registered architecture or weight name"):
        semask.load("nope")
