"""Hugging Face Hub sharing, offline: ``semask push --dry-run`` stages and plans the upload; the staged files,
laid out in ``huggingface_hub``'s own cache format, are read back through ``hf://`` with ``HF_HUB_OFFLINE=1``
(``semask.load``, ``semask predict``, ``semask info``); a real push offline fails with one line."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import semask
from semask.data.io import read_image
from semask.data.meta import get_meta
from semask.errors import ConfigError

hf = pytest.importorskip("huggingface_hub", reason="the hub extra is not installed")
from semask.hub import SIDECAR, WEIGHTS, parse_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO / "examples" / "camvid_sample" / "val" / "0016E5_07967.webp"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
EVALS = [
    {"iter": 10, "aAcc": 50.0, "mIoU": 20.0, "mAcc": 30.0},
    {"iter": 20, "aAcc": 60.0, "mIoU": 35.5, "mAcc": 40.0},
    {"iter": 30, "aAcc": 55.0, "mIoU": 31.0, "mAcc": 38.0},
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder: best.pt (semask's training-checkpoint format) and metrics.jsonl with three evaluations
    and a last line cut short (as a killed run leaves it)."""
    torch.manual_seed(0)
    meta = get_meta("camvid")
    model = semask.create_model("semask_swin_test_fpn", num_classes=len(meta.classes))
    run = tmp_path_factory.mktemp("run")
    ckpt = {
        "model": model.state_dict(),
        "model_config": model.cfg.to_dict(),
        "classes": list(meta.classes),
        "palette": [list(c) for c in meta.palette],
        "experiment": {"data": {"dataset": "camvid"}},
    }
    torch.save(ckpt, run / "best.pt")
    lines = [{"iter": 5, "loss": 1.0}, EVALS[0], EVALS[1], EVALS[2]]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in lines) + '{"iter": 40, "mI')
    return run


@pytest.fixture(scope="module")
def staged(run_dir, tmp_path_factory) -> tuple[Path, str]:
    """``semask push RUN org/tiny --dry-run --out STAGE``: (the staged folder, what it printed)."""
    stage = tmp_path_factory.mktemp("stage")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "semask",
            "push",
            str(run_dir),
            "semask-test/tiny",
            "--dry-run",
            "--out",
            str(stage),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return stage, result.stdout


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hub_cache(cache: Path, repo_id: str, folder: Path, refs: tuple[str, ...]) -> None:
    """Lay ``folder`` out as a cached snapshot ``COMMIT`` of ``repo_id`` in the huggingface_hub cache format:
    ``blobs/<etag>`` (SHA-256 for LFS files, the git blob SHA-1 otherwise), ``snapshots/<commit>/<file>``
    symlinks to them, and ``refs/<ref>`` holding the commit."""
    from huggingface_hub.file_download import repo_folder_name

    root = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    for sub in ("blobs", f"snapshots/{COMMIT}", "refs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for file in folder.iterdir():
        data = file.read_bytes()
        etag = hashlib.sha256(data).hexdigest() if file.suffix == ".safetensors" else git_blob_sha1(data)
        (root / "blobs" / etag).write_bytes(data)
        (root / "snapshots" / COMMIT / file.name).symlink_to(Path("../../blobs") / etag)
    for ref in refs:
        (root / "refs" / ref).write_text(COMMIT)


def test_parse_spec():
    assert parse_spec("hf://org/repo") == ("org/repo", None)
    assert parse_spec("hf://org/repo@v1.0") == ("org/repo", "v1.0")
    for bad in ("hf://repo", "hf://a/b/c", "hf://org/bad name", "org/repo"):
        with pytest.raises(ConfigError, match="not a Hub model"):
            parse_spec(bad)


def test_push_dry_run_stages_card_and_plan(staged, run_dir):
    stage, printed = staged
    assert sorted(p.name for p in stage.iterdir()) == sorted([WEIGHTS, SIDECAR, "README.md"])
    for name in (WEIGHTS, SIDECAR, "README.md"):
        digest = hashlib.sha256((stage / name).read_bytes()).hexdigest()
        assert f"{name}  {(stage / name).stat().st_size} bytes  sha256 {digest}" in printed
    assert "dry run: nothing uploaded to semask-test/tiny" in printed
    card = hf.ModelCard.load(stage / "README.md")
    assert card.data.library_name == "semask" and "semask_swin_test_fpn" in card.data.tags
    assert card.data.eval_results[0].metric_value == EVALS[1]["mIoU"]  # best.pt: the best evaluation
    assert str(run_dir / "best.pt") in card.text and "| 10 | Bicyclist |" in card.text
    assert "| best | 20 | 35.50 |" in card.text and "| last | 30 | 31.00 |" in card.text
    assert json.loads((stage / SIDECAR).read_text())["dataset"] == "camvid"


SCRIPT = """
import json, sys, torch, semask
from semask.cli import main
from semask.errors import SemaskError
out = {}
for spec in ("hf://semask-test/tiny", "hf://semask-test/tiny@v1", "hf://semask-test/tiny@%(commit)s"):
    model, info = semask.load(spec, with_info=True)
    ref = semask.load(sys.argv[1])
    out[spec] = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    out["classes"] = info["classes"]
for spec in ("hf://semask-test/missing", "hf://semask-test/tiny@v2"):
    try:
        semask.load(spec)
    except SemaskError as e:
        out[spec] = str(e)
out["predict"] = main(["predict", "hf://semask-test/tiny", sys.argv[2], "--out", sys.argv[3]])
out["info"] = main(["info", "hf://semask-test/tiny@v1", "--size", "64", "64"])
out["push"] = main(["push", sys.argv[1], "semask-test/tiny"])
print("RESULT " + json.dumps(out))
"""


def test_hf_load_predict_info_offline(staged, run_dir, tmp_path):
    stage, _ = staged
    cache = tmp_path / "hub"
    hub_cache(cache, "semask-test/tiny", stage, refs=("main", "v1"))
    scanned = hf.scan_cache_dir(cache)  # huggingface_hub's own reading of the layout
    assert not scanned.warnings and [r.repo_id for r in scanned.repos] == ["semask-test/tiny"]
    assert {f.file_name for r in scanned.repos for rev in r.revisions for f in rev.files} == {
        WEIGHTS,
        SIDECAR,
        "README.md",
    }
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_TOKEN": "hf_none"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT % {"commit": COMMIT}, str(run_dir), str(CAMVID), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "RESULT " in result.stdout, result.stderr
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert out["hf://semask-test/tiny"] and out["hf://semask-test/tiny@v1"]
    assert out[f"hf://semask-test/tiny@{COMMIT}"]
    assert out["classes"] == list(get_meta("camvid").classes)
    for missing in ("hf://semask-test/missing", "hf://semask-test/tiny@v2"):
        assert out[missing].startswith(f"{missing}: cannot get {WEIGHTS}") and "\n" not in out[missing]
    assert out["predict"] == 0 and out["info"] == 0
    expected = semask.Predictor(semask.load(run_dir)).predict(read_image(CAMVID))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / f"{CAMVID.stem}.png")), expected)
    assert (
        "every tensor fits the config" in result.stdout
        and "source: " + str(run_dir / "best.pt") in result.stdout
    )
    assert out["push"] == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [errors[0]] and "semask-test/tiny: upload to the Hub failed" in errors[0]
    assert "offline" in errors[0].lower()
