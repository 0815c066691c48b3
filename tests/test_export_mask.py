"""ONNX export of the mask-classification models (Mask2Former, MaskFormer, FaPN and MSFaPN Mask2Former): the
fixture-sized official models, converted from the parity fixtures, are traced at case 0's input size and checked
with onnxruntime against PyTorch on both cases' inputs (another batch size and another padded size).

Tolerance: max rel diff <= 1e-4, or 4 x the fp32 noise floor where that is larger (capped at 2e-3), as in the
parity tests: case 1 of ``m2f_ade`` has a 1x1 res5 level whose GroupNorm(32, 32) normalises single elements, so
any two fp32 implementations differ there by more than 1e-4 (see ``test_parity_d2``).
"""

import pytest
import torch
from _d2 import CAP, ULP, load_fixture, rel_diffs, restore, scaled_weights

from semask.cli import main
from semask.convert.semask_d2 import convert_fapn, convert_m2f, convert_maskformer, convert_msfapn

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'semask[onnx]')")
pytest.importorskip("onnx", reason="onnx is not installed (pip install 'semask[onnx]')")

from semask.tools.export import export_onnx, onnx_max_rel_diff  # noqa: E402

FIXTURES = {
    "m2f_ade_e16_w12_k150": convert_m2f,
    "maskformer_ade_e16_w12_k150": convert_maskformer,
    "fapn_m2f_ade_e16_w12_k150": convert_fapn,
    "msfapn_m2f_ade_e16_w12_k150": convert_msfapn,
}


@torch.no_grad()
def noise_floor(model, x: torch.Tensor) -> float:
    """Relative change of the scores when every weight is scaled by one float32 ulp (1 + 2^-23)."""
    ref = {"scores": model.predict(x)}
    saved = scaled_weights(model, 1 + ULP)
    floor = rel_diffs({"scores": model.predict(x)}, ref)["scores"]
    restore(model, saved)
    return floor


@pytest.mark.parametrize("name", list(FIXTURES))
def test_export_matches_pytorch_on_fixture_inputs(fixture_path, tmp_path, name):
    meta, tensors, model = load_fixture(fixture_path, name, FIXTURES[name])
    inputs = [tensors[f"case{i}.input"] for i in range(len(meta["cases"]))]
    assert len({x.shape for x in inputs}) == len(inputs) > 1  # batch and padded size both change
    path = export_onnx(model, tmp_path / f"{name}.onnx", size=tuple(inputs[0].shape[-2:]))
    diff = onnx_max_rel_diff(path, model, inputs)
    assert diff <= 1e-4 or diff <= min(CAP, 4 * max(noise_floor(model, x) for x in inputs)), diff


def test_export_cli_mask_model(tmp_path, capsys):
    """The CLI checks onnxruntime at (H + 13) x (W + 29), another padded size than the traced one."""
    out = tmp_path / "fapn.onnx"
    args = ["export", "semask_swin_test_fapn_m2f", "--format", "onnx", str(out), "--size", "64", "64"]
    assert main(args) == 0
    assert out.is_file()
    assert float(capsys.readouterr().out.strip().splitlines()[-1].split()[-1]) <= 1e-4
