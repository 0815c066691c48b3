"""Model-level behaviour: shapes at odd sizes, gradients, switches (baseline, lambda, checkpointing), registry."""

import pytest
import torch

import semask
from semask.layers.window_attention import relative_position_index, shift_attention_mask
from semask.layers.windows import window_partition, window_reverse
from semask.losses.fpn import semask_fpn_loss
from semask.models.zoo import official_semantic_layout


@pytest.mark.parametrize("size", [(64, 64), (63, 63), (37, 53), (112, 137)])
def test_shapes_at_odd_sizes(size):
    torch.manual_seed(0)
    model = semask.create_model("semask_swin_test_fpn", num_classes=5).eval()
    h, w = size
    feats = model.forward_features(torch.randn(2, 3, h, w))
    sh, sw = -(-h // 4), -(-w // 4)
    for i, (f, s) in enumerate(zip(feats.features, feats.semantic_maps, strict=True)):
        assert f.shape == (2, 16 * 2**i, sh, sw)
        assert s.shape == (2, 5, sh, sw)
        sh, sw = -(-sh // 2), -(-sw // 2)
    out = model(torch.randn(1, 3, h, w))
    assert out.logits.shape == out.prior_logits.shape == (1, 5, -(-h // 4), -(-w // 4))
    assert model.predict_logits(torch.randn(1, 3, h, w)).shape == (1, 5, h, w)


@pytest.mark.parametrize("name", semask.list_models("*_test_fpn"))
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = semask.create_model(name, num_classes=4, drop_path_rate=0.0)
    with torch.no_grad():  # gamma starts at 0, which would block the gradient of the attention branch
        for n, p in model.named_parameters():
            if n.endswith("gamma"):
                p.fill_(0.5)
    x, y = torch.randn(2, 3, 40, 56), torch.randint(0, 4, (2, 40, 56))
    out = model(x)
    losses = semask_fpn_loss(out.logits, out.prior_logits, y)
    (losses["loss_ce"] + losses.get("loss_cate", 0)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_baseline_has_no_semantic_layers():
    model = semask.create_model("swin_test_fpn", num_classes=3).eval()
    assert not any("semantic_layer" in k for k in model.state_dict())
    out = model(torch.randn(1, 3, 32, 32))
    assert out.prior_logits is None
    assert set(semask_fpn_loss(out.logits, None, torch.zeros(1, 32, 32, dtype=torch.long))) == {
        "loss_ce",
        "acc_seg",
    }


def test_class_weight_scales_each_pixel_and_keeps_the_all_pixel_mean():
    torch.manual_seed(0)
    logits, prior = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    label = torch.randint(0, 3, (2, 16, 16))
    label[0, :4] = 255
    weight = torch.tensor([0.5, 1.0, 3.0])
    plain = semask_fpn_loss(logits, prior, label)
    weighted = semask_fpn_loss(logits, prior, label, class_weight=weight)
    up = torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    ce = torch.nn.functional.cross_entropy(up, label, ignore_index=255, reduction="none")
    per_pixel = ce * torch.where(label == 255, 0.0, weight[label.clamp(max=2)])
    torch.testing.assert_close(weighted["loss_ce"], per_pixel.mean())  # mmseg: mean over all pixels
    assert not torch.allclose(weighted["loss_cate"], plain["loss_cate"])
    doubled = semask_fpn_loss(logits, prior, label, class_weight=torch.full((3,), 2.0))
    torch.testing.assert_close(doubled["loss_ce"], 2 * plain["loss_ce"])


def test_lambda_off_changes_output_and_removes_gamma():
    torch.manual_seed(0)
    with_gamma = semask.create_model("semask_swin_test_fpn", num_classes=3).eval()
    torch.manual_seed(0)
    without = semask.create_model("semask_swin_test_fpn", num_classes=3, use_gamma=False).eval()
    assert not any(k.endswith("gamma") for k in without.state_dict())
    sd = {k: v for k, v in with_gamma.state_dict().items() if not k.endswith("gamma")}
    without.load_state_dict(sd)
    x = torch.randn(1, 3, 32, 32)
    # gamma=0 hides the attention branch; without lambda it is added with weight 1
    assert not torch.allclose(with_gamma(x).logits, without(x).logits)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    kw = dict(num_classes=3, drop_path_rate=0.0, dropout=0.0, sem_drop=0.0)
    a = semask.create_model("semask_swin_test_fpn", **kw)
    b = semask.create_model("semask_swin_test_fpn", **kw, use_checkpoint=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 48, 48)
    for m in (a, b):
        m(x).logits.square().mean().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)


def test_official_layout_rule():
    assert official_semantic_layout(96, 150) == ("window", "window", "global", "global")
    assert official_semantic_layout(192, 171) == ("window", "window", "global", "global")
    assert official_semantic_layout(128, 150) == ("window",) * 4
    assert official_semantic_layout(96, 19) == ("window",) * 4
    assert (
        semask.create_model("semask_swin_tiny_fpn", num_classes=19).cfg.semantic_attention == ("window",) * 4
    )
    explicit = semask.create_model("semask_swin_test_fpn", num_classes=19, semantic_attention=("global",) * 4)
    assert [layer.semantic_layer.mode for layer in explicit.backbone.layers] == ["global"] * 4


def test_paper_param_counts():
    # Table 2 / official README: SeMask-T 35M, S 56M, B 96M, L 211M (ADE20K, K=150)
    expected = {"tiny": 34.66, "small": 55.97, "base": 96.49, "large": 210.79}
    for size, millions in expected.items():
        with torch.device("meta"):
            model = semask.create_model(f"semask_swin_{size}_fpn", num_classes=150)
        assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.01)


def test_window_helpers():
    x = torch.randn(2, 14, 21, 3)
    assert torch.equal(window_reverse(window_partition(x, 7), 7, 14, 21), x)
    idx = relative_position_index(3)
    assert idx.shape == (9, 9) and idx.min() == 0 and idx.max() == 24 and idx[4, 4] == 12
    mask = shift_attention_mask(14, 14, 7, torch.device("cpu"))
    assert mask.shape == (4, 49, 49)
    assert (mask[0] == 0).all() and (mask[-1] != 0).any()


def test_unknown_model_and_field():
    with pytest.raises(KeyError, match="unknown model"):
        semask.create_model("semask_swin_huge_fpn")
    with pytest.raises(TypeError, match="unknown config fields"):
        semask.create_model("semask_swin_test_fpn", embed=3)
