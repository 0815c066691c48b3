"""ONNX export: one graph with dynamic batch/height/width matches PyTorch's full-resolution logits."""

import pytest
import torch

import semask
from semask.cli import main

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'semask[onnx]')")
pytest.importorskip("onnx", reason="onnx is not installed (pip install 'semask[onnx]')")

from semask.tools.export import export_onnx, onnx_max_rel_diff  # noqa: E402


def test_export_matches_pytorch_at_other_sizes(tmp_path):
    """Traced at 64x64; checked at sizes that need other paddings (not multiples of 32) and batch 2."""
    torch.manual_seed(0)
    model = semask.create_model(
        "semask_swin_test_fpn",
        num_classes=5,
        depths=(1, 2, 1, 1),
        semantic_attention=("window", "global") * 2,
    )
    path = export_onnx(model, tmp_path / "model.onnx", size=(64, 64))
    for shape in [(1, 3, 75, 101), (2, 3, 130, 53)]:
        assert onnx_max_rel_diff(path, model, torch.randn(shape)) <= 1e-4, shape


def test_export_cli(tmp_path, capsys):
    out = tmp_path / "test.onnx"
    assert main(["export", "semask_swin_test_fpn", "--format", "onnx", str(out), "--size", "48", "40"]) == 0
    assert out.is_file()
    diff = float(capsys.readouterr().out.strip().splitlines()[-1].split()[-1])
    assert diff <= 1e-4
