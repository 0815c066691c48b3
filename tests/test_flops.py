"""FLOP counting: mmcv's module-hook rules exactly, the paper's mmseg figures, PyTorch's operator count."""

import pytest
import torch
from torch import nn

import semask
from semask.cli import main
from semask.tools.flops import mmcv_flops, torch_flops
from semask.weights import save_model


def test_mmcv_rules_on_a_toy_model():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 8*6 positions x (9*3*4) + bias 4*48 = 5376
        nn.BatchNorm2d(4),  # 192 x2 (affine) = 384
        nn.ReLU(),  # 192
        nn.Upsample(scale_factor=2),  # output 4*16*12 = 768
        nn.AdaptiveAvgPool2d(1),  # input 768
        nn.Flatten(),
        nn.Linear(4, 5),  # 4 x 5 = 20
        nn.LayerNorm(5),  # 5 x2 = 10
        nn.GELU(),  # not in mmcv's table: 0
        nn.Dropout(),  # 0
    ).train()
    assert mmcv_flops(model, (8, 6)) == 5376 + 384 + 192 + 768 + 768 + 20 + 10
    assert model.training  # mode restored


@pytest.mark.parametrize(
    "num_classes, size, official",
    [(150, (512, 512), 39.86e9), (19, (768, 768), 83.91e9)],  # SeMask-T FPN, mmseg tools/get_flops.py
)
def test_paper_figures_semask_tiny_fpn(num_classes, size, official):
    with torch.device("meta"):
        model = semask.create_model("semask_swin_tiny_fpn", num_classes=num_classes)
    assert mmcv_flops(model, size) == pytest.approx(official, rel=0.02)
    if num_classes == 150:  # official model under FlopCounterMode: 83.08 GFLOP
        assert torch_flops(model, size) == pytest.approx(83.08e9, rel=0.01)


def test_cli_info(tmp_path, capsys):
    assert main(["info", "semask_swin_test_fpn", "--size", "64", "96", "--num-classes", "4"]) == 0
    out = capsys.readouterr().out
    assert "GMac" in out and "GFLOP" in out
    model = semask.create_model("semask_swin_test_fpn", num_classes=4)
    path = save_model(model, tmp_path / "m.safetensors")
    assert main(["info", str(path), "--size", "64", "96"]) == 0
    assert capsys.readouterr().out.splitlines()[-4:] == out.splitlines()[-4:]  # same numbers as the arch
    assert f"params: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M" in out
    assert main(["info", "no_such_model", "--size", "64", "64"]) == 2
