"""Host-dependent decisions (:mod:`semask.hardware`): both CPU paths on whichever machine runs the suite.

``SEMASK_CPU=avx2`` forces the decision of a CPU without AVX-512 / native bf16; CI also runs the tests marked
``cpu_paths`` with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (PyTorch itself as on an AVX2 CPU).
"""

import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semask import hardware
from semask.cli import main
from semask.errors import ConfigError
from semask.layers import onednn

pytestmark = pytest.mark.cpu_paths
REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "camvid_sample"


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(hardware, "_warned", set())


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ConfigError, match="fp16.*needs a CUDA GPU"):
        hardware.amp_decision("fp16", "cpu")
    with pytest.raises(ConfigError, match="unknown amp"):
        hardware.amp_decision("fp8", "cpu")


def test_bf16_without_native_bf16_runs_fp32_and_says_so_once():
    with hardware.cpu_mode("avx2"):
        assert not hardware.native_bf16()
        with pytest.warns(hardware.HardwareWarning, match="no native bf16"):
            assert hardware.resolve_amp("bf16", "cpu") == "none"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a second warning would raise
            assert hardware.resolve_amp("bf16", "cpu") == "none"
            assert hardware.resolve_amp("auto", "cpu") == "none"  # auto never warns
    assert hardware.get_cpu_mode() == "auto"  # restored


def test_auto_follows_the_cpu():
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and hardware._probe_onednn(torch.bfloat16)
    assert hardware.native_bf16() == native
    assert hardware.amp_decision("auto", "cpu")[0] == ("bf16" if native else "none")
    assert hardware.amp_decision("bf16", "cpu")[0] == ("bf16" if native else "none")
    assert hardware.amp_decision("none", "cpu")[0] == "none"


@pytest.mark.parametrize("mode", hardware.CPU_MODES)
def test_onednn_kernels_follow_the_mode(mode):
    """The oneDNN fast path runs only where the mode and the CPU allow it; every mode gives nn.Linear's result."""
    layer = onednn.OneDNNLinear(16, 8)
    x = torch.randn(5, 16)
    with torch.no_grad(), hardware.cpu_mode(mode):
        expect = {
            torch.float32: mode != "plain" and hardware._probe_onednn(torch.float32),
            torch.bfloat16: mode == "auto" and hardware._probe_onednn(torch.bfloat16),
        }
        assert {d: hardware.onednn_runs(d) for d in expect} == expect
        assert (onednn.fused_linear(x, layer) is not None) == expect[torch.float32]
        torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert (onednn.fused_linear(x, layer) is not None) == expect[torch.bfloat16]
            assert layer(x).dtype == torch.bfloat16


def test_cpu_mode_switch_from_the_environment():
    code = "from semask import hardware; print(hardware.get_cpu_mode(), hardware.native_bf16())"
    env = os.environ | {"SEMASK_CPU": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["avx2", "False"]
    with pytest.raises(ConfigError, match="unknown CPU mode"):
        hardware.set_cpu_mode("avx9000")


def test_compile_without_a_compiler_is_refused(monkeypatch):
    from semask import create_model
    from semask.tools.compile import compile_model

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        compile_model(create_model("semask_swin_test_fpn", num_classes=3))


def test_missing_cuda_device_is_one_error_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    args = ["bench", "semask_swin_test_fpn", "--size", "32", "32", "--num-classes", "3", "--device", "cuda"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: device cuda") and "--device cpu" in err[0]


def _semask(*args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "semask", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_readme_demo_path_without_native_bf16(tmp_path):
    """The README demo (train the CamVid demo preset, eval, predict with priors) as on a CPU without native bf16:
    the preset's amp='auto' trains in fp32, and an explicit --amp bf16 falls back to fp32 with one note."""
    env = os.environ | {"SEMASK_CPU": "avx2"}
    run = tmp_path / "run"
    small = ["train.max_iters=3", "train.eval_interval=3", "train.batch_size=2", "data.crop_size=(64, 96)"]
    sets = [a for s in small for a in ("--set", s)]
    train = _semask("train", "semask_swin_nano_fpn_camvid-demo", "--data-root", str(SAMPLE), "--out", str(run),
                    "--no-progress", *sets, env=env)  # fmt: skip
    assert train.returncode == 0, train.stderr
    assert "note:" not in train.stderr  # amp='auto' decides quietly
    assert (run / "best.pt").is_file()
    ev = _semask("eval", str(run), "--data-root", str(SAMPLE), "--amp", "bf16", env=env)
    assert ev.returncode == 0, ev.stderr
    notes = [line for line in ev.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "no native bf16" in notes[0]
    assert "mIoU" in ev.stdout
    out = tmp_path / "pred"
    pred = _semask(
        "predict", str(run), str(SAMPLE / "val"), "--out", str(out), "--priors", "--amp", "bf16", env=env
    )
    assert pred.returncode == 0, pred.stderr
    n_val = len(list((SAMPLE / "val").iterdir()))
    labels = [p for p in out.rglob("*.png") if Image.open(p).mode == "P"]
    assert len(labels) == n_val
    assert np.asarray(Image.open(labels[0])).max() < 11
    fp16 = _semask("eval", str(run), "--data-root", str(SAMPLE), "--amp", "fp16", env=env)
    assert fp16.returncode == 2 and fp16.stderr.strip().splitlines() == [
        "error: amp='fp16' needs a CUDA GPU; on CPU use amp='bf16' (CPUs with native bf16) or amp='none' (fp32)"
    ]


def test_bench_records_the_cpu(capsys):
    args = ["bench", "semask_swin_test_fpn", "--size", "32", "32", "--num-classes", "3", "--iters", "1"]
    assert main([*args, "--warmup", "0", "--amp", "auto", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["cpu"] == hardware.cpu_capability() and result["amp_requested"] == "auto"
    assert result["amp"] == hardware.amp_decision("auto", "cpu")[0]


def _glibc_version() -> tuple[int, ...]:
    name, version = platform.libc_ver()
    return tuple(int(v) for v in version.split(".")) if name == "glibc" else ()


@pytest.mark.skipif(_glibc_version() < (2, 33), reason="glibc's mallopt and mallinfo2 (glibc >= 2.33) only")
def test_keep_freed_memory_serves_large_tensors_from_the_heap():
    """After keep_freed_memory(), a 64 MiB tensor is no longer an mmap'd block (mallinfo2's hblkhd), so freeing and
    allocating it again reuses the same pages instead of faulting in fresh ones (run in a fresh process)."""
    script = """
import ctypes, torch
from semask.hardware import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                                               "fordblks keepcost").split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
def mapped_mib():
    x = torch.empty(64 << 20, dtype=torch.uint8)
    return libc.mallinfo2().hblkhd >> 20
before = mapped_mib()
print(before, keep_freed_memory(), mapped_mib())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    before, kept, after = out.split()
    assert int(before) >= 64 and kept == "True" and int(after) < 64, out
