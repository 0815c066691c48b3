"""Training loop behaviour on the bundled real CamVid sample: learning, exact resume, DDP equivalence."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from semask.configs import load_config
from semask.engine.optim import build_optimizer, lr_at
from semask.engine.train import train
from semask.errors import ConfigError, SemaskError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "camvid_sample"

TINY = [
    f"data.root={SAMPLE}",
    "data.crop_size=(64, 96)",
    "data.scale=(160, 120)",
    "eval.scale=(160, 120)",
    "data.num_workers=0",
    "train.batch_size=4",
    "train.warmup_iters=2",
    "train.eval_interval=1000",
    "train.log_interval=1",
    "model.drop_path_rate=0.0",
    "train.amp=none",
]


def _cfg(*extra: str):
    return load_config("semask_swin_nano_fpn_camvid-demo", [*TINY, *extra])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def test_loss_decreases_on_real_camvid(tmp_path):
    torch.manual_seed(0)
    train(_cfg("train.max_iters=40", "optim.lr=3e-3", "train.eval_interval=40"), tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8
    evals = [r for r in rows if "mIoU" in r]
    assert evals and 0 < evals[-1]["mIoU"] <= 100
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "config.json").is_file()


def test_resume_equals_straight_run(tmp_path):
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    cfg = _cfg("train.max_iters=4", "train.ckpt_interval=100")
    train(cfg, straight, progress=False)
    train(cfg, paused, progress=False, stop_after=2)
    assert torch.load(paused / "last.pt", weights_only=True)["iteration"] == 2
    train(cfg, paused, progress=False, resume=True)
    a, b = _weights(straight), _weights(paused)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_refuses_to_overwrite_a_run(tmp_path):
    cfg = _cfg("train.max_iters=1")
    train(cfg, tmp_path, progress=False)
    with pytest.raises(SemaskError, match="--resume"):
        train(cfg, tmp_path, progress=False)


def test_class_weights_must_match_the_classes(tmp_path):
    assert len(_cfg().train.class_weight) == 11  # the CamVid presets weight the rare classes
    with pytest.raises(ConfigError, match="class_weight has 11 values but model.num_classes is 5"):
        train(_cfg("train.max_iters=1", "model.num_classes=5"), tmp_path, progress=False)


def test_ddp_two_processes_equal_one(tmp_path):
    # same global batch of 4: one process with 4 images vs two gloo processes with 2 each (SyncBN on CPU)
    overrides = [*TINY, "train.max_iters=3", "model.dropout=0.0", "model.sem_drop=0.0"]
    sets = [a for o in overrides for a in ("--set", o)]
    base = [sys.executable, "-m", "semask", "train", "semask_swin_nano_fpn_camvid-demo", "--no-progress"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run(
        [*base, "--data-root", str(SAMPLE), "--out", str(tmp_path / "one"), *sets], check=True, env=env
    )
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
    ]
    subprocess.run(
        [*torchrun, "-m", "semask", "train", "semask_swin_nano_fpn_camvid-demo", "--no-progress"]
        + ["--data-root", str(SAMPLE), "--out", str(tmp_path / "two"), *sets],
        check=True,
        env=env,
    )
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in a:
        if k.endswith("num_batches_tracked"):
            assert a[k] == b[k]
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_poly_schedule_with_warmup():
    t = load_config("semask_swin_tiny_fpn_ade20k-512_80k").train
    assert lr_at(0, 1e-4, t) == pytest.approx(1e-4 * 1e-6)
    assert lr_at(750, 1e-4, t) == pytest.approx(1e-4 * (1 - 750 / 80000) * (1 - 0.5 * (1 - 1e-6)))
    assert lr_at(1500, 1e-4, t) == pytest.approx(1e-4 * (1 - 1500 / 80000))
    assert lr_at(79999, 1e-4, t) == pytest.approx(1e-4 / 80000)


def test_no_weight_decay_groups():
    import semask

    model = semask.create_model("semask_swin_test_fpn", num_classes=3)
    opt = build_optimizer(model, load_config("semask_swin_tiny_fpn_ade20k-512_80k").optim)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[1]["weight_decay"] == 0.0
    assert "backbone.layers.0.blocks.0.attn.relative_position_bias_table" in no_decay
    assert "backbone.norm0.weight" in no_decay and "backbone.layers.0.semantic_layer.norm1.bias" in no_decay
    assert "backbone.layers.0.downsample.norm.weight" in no_decay
    decay = {names[id(p)] for p in opt.param_groups[0]["params"]}
    assert "backbone.layers.0.semantic_layer.class_injection.0.gamma" in decay
    assert "decode_head.scale_heads.0.0.bn.weight" in decay
