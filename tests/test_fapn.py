"""SeMask-FAPN: DCNv2 against its definition and the official kernel's outputs, FaPN / MSFaPN Mask2Former parity
with the official models (every stored tensor, loss and matching; see ``test_parity_d2`` for the criteria),
perturbations of the FaPN modules, and conversion of the full-size official key manifests (SPEC A4, A7)."""

import pytest
import torch
import torch.nn.functional as F
from _d2 import (
    assert_fixture_parity,
    assert_manifest_converts,
    bilinear_corners,
    fixture_float_keys,
    load_fixture,
    manifest_state_dict,
    module_families,
    perturbations_that_keep_parity,
)

import semask
from semask.convert.semask_d2 import convert_fapn, convert_m2f, convert_msfapn
from semask.errors import CheckpointError
from semask.layers.dcn import DCN, modulated_deform_conv2d

FIXTURES = {"fapn_m2f_ade_e16_w12_k150": convert_fapn, "msfapn_m2f_ade_e16_w12_k150": convert_msfapn}
MANIFESTS = {
    "fapn_m2f_ade20k_semask_swin_large": (convert_fapn, "semask_swin_large_fapn_m2f"),
    "msfapn_m2f_ade20k_semask_swin_large": (convert_msfapn, "semask_swin_large_msfapn_m2f"),
}
PD = "sem_seg_head.pixel_decoder."


def naive_dcn(x, offset, mask, weight, bias, stride, padding, dilation) -> torch.Tensor:
    """Per output pixel, tap and group loop of the official kernel: bilinear, corners outside the map are zero."""
    b, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    k = kh * kw
    groups = mask.shape[1] // k
    ho, wo = offset.shape[-2:]
    cols = torch.zeros(b, c, k, ho, wo, dtype=x.dtype)
    for n in range(b):
        for g in range(groups):
            chans = slice(g * c // groups, (g + 1) * c // groups)
            for t in range(k):
                for i in range(ho):
                    for j in range(wo):
                        y = (
                            i * stride
                            - padding
                            + (t // kw) * dilation
                            + float(offset[n, 2 * (g * k + t), i, j])
                        )
                        xx = (
                            j * stride
                            - padding
                            + (t % kw) * dilation
                            + float(offset[n, 2 * (g * k + t) + 1, i, j])
                        )
                        val = torch.zeros(c // groups, dtype=x.dtype)
                        for yy, xc, wt in bilinear_corners(y, xx, h, w):
                            val += wt * x[n, chans, yy, xc]
                        cols[n, chans, t, i, j] = val * mask[n, g * k + t, i, j]
    return torch.einsum("bcthw,oct->bohw", cols, weight.reshape(c_out, c, k)) + bias.view(1, -1, 1, 1)


@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, 1, 1), (2, 0, 2)])
def test_dcn_matches_naive_loop(stride, padding, dilation):
    """Interleaved (dy, dx) per group and tap, modulation, zeros outside (some samples fall off the map)."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    ho = (5 + 2 * padding - 2 * dilation - 1) // stride + 1
    wo = (6 + 2 * padding - 2 * dilation - 1) // stride + 1
    offset = 2.5 * torch.randn(2, 2 * 2 * 9, ho, wo, dtype=torch.float64)
    mask = torch.rand(2, 2 * 9, ho, wo, dtype=torch.float64)
    weight, bias = torch.randn(3, 4, 3, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    ours = modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
    ref = naive_dcn(x, offset, mask, weight, bias, stride, padding, dilation)
    assert torch.allclose(ours, ref, atol=1e-10)


@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_dcn_with_zero_offsets_and_unit_mask_is_a_convolution(stride, padding, dilation):
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 16, 9, 7), torch.randn(5, 16, 3, 3), torch.randn(5)
    ref = F.conv2d(x, weight, bias, stride, padding, dilation)
    offset, mask = torch.zeros(2, 2 * 8 * 9, *ref.shape[-2:]), torch.ones(2, 8 * 9, *ref.shape[-2:])
    out = modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
    assert torch.allclose(out, ref, atol=1e-5)


def test_dcn_module_layout_and_errors():
    """DCN: offsets = the first 2/3 of conv_offset_mask (cat(o1, o2)), mask = sigmoid of the last third."""
    torch.manual_seed(0)
    dcn = DCN(16, 8, 3, deformable_groups=4)
    assert not dcn.conv_offset_mask.weight.any() and dcn.conv_offset_mask.weight.shape == (
        3 * 4 * 9,
        16,
        3,
        3,
    )
    torch.nn.init.normal_(dcn.conv_offset_mask.weight, std=0.3)
    x, feat = torch.randn(1, 16, 6, 5), torch.randn(1, 16, 6, 5)
    om = dcn.conv_offset_mask(feat)
    o1, o2, m = om.chunk(3, dim=1)
    expected = modulated_deform_conv2d(x, torch.cat([o1, o2], 1), m.sigmoid(), dcn.weight, dcn.bias, 1, 1)
    assert torch.equal(dcn(x, feat), expected)
    with pytest.raises(ValueError, match="deformable_groups"):
        DCN(12, 8, 3, deformable_groups=8)
    with pytest.raises(ValueError, match="DCN shapes do not fit"):
        modulated_deform_conv2d(x, om[:, :72], om[:, 72:], torch.randn(8, 12, 3, 3), None, 1, 1)


@pytest.mark.parametrize("name", list(FIXTURES))
def test_dcn_matches_official_kernel_outputs(fixture_path, name):
    """Every ``align_k.dcpack_L2`` of both cases, from the stored inputs (official DCNv2 CPU kernel outputs)."""
    _, tensors, model = load_fixture(fixture_path, name, FIXTURES[name])
    checked = 0
    for key, ref in tensors.items():
        if key.endswith(".dcn_out"):
            case, _, align = key.split(".")[:3]
            dcn = getattr(model.sem_seg_head.pixel_decoder, align).dcpack_L2
            head = key.removesuffix("dcn_out")
            with torch.no_grad():
                out = dcn(tensors[head + "dcn_feat_in"], tensors[head + "dcn_offset_in"])
            assert (out - ref).abs().max() <= 1e-5 * max(1.0, float(ref.abs().max())), key
            checked += 1
    assert checked == (6 if name.startswith("fapn") else 2)


@pytest.mark.parametrize("name", list(FIXTURES))
def test_outputs_losses_and_matching_match_official(fixture_path, name):
    meta, tensors, model = load_fixture(fixture_path, name, FIXTURES[name])
    pd = model.sem_seg_head.pixel_decoder
    aligns = [m for n, m in pd.named_children() if n.startswith("align_")]
    assert len(aligns) == (3 if name.startswith("fapn") else 1)
    for k, align in enumerate(aligns, start=1):  # one GroupNorm under two names, counted once
        assert align.offset.norm is getattr(pd, f"layer_{k}").norm
    measured = assert_fixture_parity(meta, tensors, model)
    assert sum(".dcn_" in k for k in measured) == 2 * 3 * len(aligns)  # the DCN tensors were compared too


@pytest.mark.parametrize("name", list(FIXTURES))
def test_perturbing_any_pixel_decoder_family_breaks_parity(fixture_path, name):
    """A wrong weight in any pixel-decoder module family (FeatureAlign offset conv, shared norm, DCN and its
    offset/mask conv included) is caught by the outputs or losses of case 0."""
    meta, tensors, model = load_fixture(fixture_path, name, FIXTURES[name])
    keys = module_families([k for k in fixture_float_keys(tensors) if k.startswith(PD)])
    assert {PD + "align_1.offset.norm.weight", PD + "align_1.dcpack_L2.conv_offset_mask.weight"} <= set(keys)
    assert perturbations_that_keep_parity(meta, tensors, model, keys) == []


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_full_size_official_checkpoints_convert_and_load_strictly(manifests, name):
    convert, arch = MANIFESTS[name]
    entry = manifests[name]
    cfg = assert_manifest_converts(entry, manifest_state_dict(entry), convert, arch)
    assert cfg.decoder_name == f"{name.split('_')[0]}_m2f" and cfg.semantic_attention == (
        "window",
        "window",
        "global",
        "global",
    )


def test_conversion_errors_name_the_problem(manifests):
    fapn = manifest_state_dict(manifests["fapn_m2f_ade20k_semask_swin_large"])
    msfapn = manifest_state_dict(manifests["msfapn_m2f_ade20k_semask_swin_large"])
    with pytest.raises(
        CheckpointError, match="MSFaPN Mask2Former checkpoint: convert it with --from semask-msfapn"
    ):
        convert_fapn({"model": msfapn})
    with pytest.raises(
        CheckpointError, match="FaPN Mask2Former checkpoint: convert it with --from semask-fapn"
    ):
        convert_m2f({"model": fapn})
    m2f = manifest_state_dict(manifests["m2f_ade20k_semask_swin_large"])
    with pytest.raises(CheckpointError, match="Mask2Former checkpoint: convert it with --from semask-m2f-d2"):
        convert_msfapn({"model": m2f})
    key, twin = PD + "align_2.offset.norm.bias", PD + "layer_2.norm.bias"
    untied = fapn | {key: torch.ones(256), twin: torch.zeros(256)}
    with pytest.raises(CheckpointError, match=f"differ: \\['{key} vs {twin}'\\]"):
        convert_fapn({"model": untied})


@pytest.mark.parametrize("name", ["semask_swin_test_fapn_m2f", "semask_swin_test_msfapn_m2f"])
def test_tiny_models_train_at_odd_sizes(name):
    """Registered test models: shapes at a size that is no multiple of 32, and a gradient for every parameter
    (after giving the zero-initialised offset/mask convs, gamma and mlp_res non-zero values)."""
    torch.manual_seed(0)
    model = semask.create_model(name, num_classes=4, drop_path_rate=0.0)
    assert model.cfg.semantic_attention == ("window", "window", "global", "global")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(("gamma", "mlp_res.weight", "conv_offset_mask.weight", "sampling_offsets.weight",
                           "attention_weights.weight")):  # fmt: skip
                p.normal_(std=0.1)
    x, y = torch.randn(2, 3, 40, 56), torch.randint(0, 4, (2, 40, 56))
    out = model(x)
    assert out.pred_masks.shape == (2, model.cfg.num_queries, 16, 16) and out.prior_logits.shape == (
        2,
        4,
        64,
        64,
    )
    sum(model.losses(out, y).values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    with torch.no_grad():
        assert model.predict(x).shape == (2, 4, 40, 56)
