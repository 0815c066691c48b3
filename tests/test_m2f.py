"""SeMask Mask2Former / MaskFormer behaviour: MSDeformAttn against a naive loop, shapes at odd sizes, gradients,
a short real training run, configs, and conversion of the full-size official key manifests (SPEC A4, A7)."""

import json
import math
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _d2 import assert_manifest_converts, bilinear_corners, manifest_state_dict

import semask
from semask.convert import convert_checkpoint
from semask.data.datasets import build_dataset
from semask.data.transforms import TrainTransform
from semask.errors import CheckpointError
from semask.layers.impl import use_impl
from semask.layers.ms_deform_attn import MSDeformAttn, _BilinearGather, ms_deform_attn_core
from semask.losses.points import point_sample
from semask.models import build_model, compose

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camvid_sample"
TEST_MODELS = ["semask_swin_test_m2f", "semask_swin_test_maskformer"]
MANIFESTS = {
    "m2f_ade20k_semask_swin_large": "semask-m2f-d2",
    "m2f_cityscapes_semask_swin_large": "semask-m2f-d2",
    "maskformer_ade20k_semask_swin_large": "semask-maskformer-d2",
}


def naive_ms_deform_attn(value, shapes, locations, weights) -> torch.Tensor:
    """Per-point loop: bilinear interpolation with zeros outside, pixel centres at (i + 0.5) / size."""
    b, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = locations.shape
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    out = torch.zeros(b, lq, m, d, dtype=value.dtype)
    for n in range(b):
        for q in range(lq):
            for head in range(m):
                for lvl, (h, w) in enumerate(shapes):
                    for k in range(p):
                        x = float(locations[n, q, head, lvl, k, 0]) * w - 0.5
                        y = float(locations[n, q, head, lvl, k, 1]) * h - 0.5
                        for yy, xx, wt in bilinear_corners(y, x, h, w):
                            v = value[n, starts[lvl] + yy * w + xx, head]
                            out[n, q, head] += weights[n, q, head, lvl, k] * wt * v
    return out.reshape(b, lq, m * d)


@pytest.mark.parametrize("impl, grad", [("reference", False), ("fast", True), ("fast", False)])
def test_ms_deform_attn_core_matches_naive_loop(impl, grad):
    """Each path: reference (grid_sample, stacked), fast with autograd (grid_sample per level), fast inference
    (one embedding_bag over zero-bordered levels); points on, near and far outside the borders."""
    torch.manual_seed(0)
    shapes, b, lq, m, d, p = [(3, 4), (2, 2), (1, 3)], 2, 5, 2, 3, 2
    value = torch.randn(b, sum(h * w for h, w in shapes), m, d, dtype=torch.float64, requires_grad=grad)
    locations = torch.rand(b, lq, m, len(shapes), p, 2, dtype=torch.float64) * 3.0 - 1.0  # many fall outside
    locations[0, :3, 0, 0, 0] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-0.125, 1.1]], dtype=torch.float64)
    weights = torch.rand(b, lq, m, len(shapes), p, dtype=torch.float64)
    ref = naive_ms_deform_attn(value.detach(), shapes, locations, weights)
    with use_impl(impl):
        out = ms_deform_attn_core(value, shapes, locations, weights)
    assert torch.allclose(out, ref, atol=1e-12)


@torch.no_grad()
def test_ms_deform_attn_layouts():
    """Offsets (x, y) / (w_l, h_l) of the SAMPLED level, softmax over levels*points per head, value heads h*D+d."""
    torch.manual_seed(0)
    shapes, c, m, p = [(4, 6), (2, 3)], 8, 2, 3
    attn = MSDeformAttn(c, len(shapes), m, p).double()
    for lin in (attn.sampling_offsets, attn.attention_weights):
        torch.nn.init.normal_(lin.weight, std=0.5)
    src = torch.randn(1, sum(h * w for h, w in shapes), c, dtype=torch.float64)
    ref = torch.rand(1, src.shape[1], len(shapes), 2, dtype=torch.float64)
    offsets = attn.sampling_offsets(src).view(1, -1, m, len(shapes), p, 2)
    norm = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float64)
    locations = ref[:, :, None, :, None, :] + offsets / norm[None, None, None, :, None, :]
    weights = (
        attn.attention_weights(src).view(1, -1, m, len(shapes) * p).softmax(-1).view(1, -1, m, len(shapes), p)
    )
    value = attn.value_proj(src).view(1, -1, m, c // m)
    expected = attn.output_proj(naive_ms_deform_attn(value, shapes, locations, weights))
    assert torch.allclose(attn(src, ref, src, shapes), expected, atol=1e-10)


@pytest.mark.parametrize("name", TEST_MODELS)
@pytest.mark.parametrize("size", [(64, 64), (37, 53), (33, 97)])
def test_shapes_at_odd_sizes(name, size):
    torch.manual_seed(0)
    model = semask.create_model(name, num_classes=5).eval()
    h, w = size
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w))
        scores = model.predict(torch.randn(1, 3, h, w))
    q = model.cfg.num_queries
    assert out.pred_logits.shape == (2, q, 6) and out.pred_masks.shape == (2, q, hp // 4, wp // 4)
    assert out.prior_logits.shape == (2, 5, hp, wp)
    assert len(out.aux_outputs) == model.cfg.dec_layers - 1  # M2F: the first is from the learnable queries
    if name.endswith("m2f"):
        sizes = [(hp // s) * (wp // s) for s in (32, 16, 8)]
        assert [m.shape for m in out.attn_masks] == [
            (2, q, sizes[i % 3]) for i in range(model.cfg.dec_layers - 1)
        ]
    assert scores.shape == (1, 5, h, w) and bool((scores >= 0).all())
    assert [f.shape[-2:] for f in model.forward_features(torch.randn(1, 3, h, w)).semantic_maps][0] == (
        -(-h // 4),
        -(-w // 4),
    )


@pytest.mark.parametrize("name", TEST_MODELS)
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = semask.create_model(name, num_classes=4, drop_path_rate=0.0)
    with torch.no_grad():  # zero inits that block gradients at step 0: gamma and mlp_res (D2 init) stop the
        # semantic-attention branch; zero MSDeformAttn offset/weight projections make the output independent of
        # the query (so of the level embedding); zero attention biases make MaskFormer's first self-attention
        # output (of zero queries) zero
        zero_init = (
            "mlp_res.weight",
            "sampling_offsets.weight",
            "attention_weights.weight",
            "in_proj_bias",
            "out_proj.bias",
        )
        for n, p in model.named_parameters():
            if n.endswith("gamma"):
                p.fill_(0.5)
            elif n.endswith(zero_init):
                p.normal_(std=0.02)
    x, y = torch.randn(2, 3, 40, 56), torch.randint(0, 4, (2, 40, 56))
    y[:, :4] = 255
    losses = model.losses(model(x), y)
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_d2_init_option():
    torch.manual_seed(0)
    d2 = semask.create_model("semask_swin_test_m2f", num_classes=4)
    fpn = semask.create_model("semask_swin_test_m2f", num_classes=4, weight_init="mmseg")
    key = "backbone.layers.0.semantic_layer.class_injection.0."
    sd, sf = d2.state_dict(), fpn.state_dict()
    assert not sd[key + "mlp_res.weight"].any() and sf[key + "mlp_res.weight"].any()
    assert not sd[key + "gamma"].any() and not sf[key + "gamma"].any()
    fan_in = sd[key + "mlp_v.weight"].shape[1]  # kaiming normal: std sqrt(2 / fan_in), vs trunc_normal 0.02
    assert sd[key + "mlp_v.weight"].std() > 3 * sf[key + "mlp_v.weight"].std() and fan_in == 16
    with pytest.raises(ValueError):
        build_model(replace(d2.cfg, weight_init="xavier"))


def test_training_iterations_lower_the_loss_on_camvid():
    """A plain AdamW loop calling ``model.losses`` on a fixed batch of the bundled real CamVid sample."""
    torch.manual_seed(0)
    dataset = build_dataset("camvid", SAMPLE, "train")
    transform = TrainTransform(crop_size=(96, 128), scale=(240, 180), photometric=False, seed=0)
    samples = [transform(*(lambda s: (s["image"], s["label"]))(dataset.load(i))) for i in (0, 7)]
    images = torch.stack([s["image"] for s in samples])
    labels = torch.stack([s["label"] for s in samples])
    model = semask.create_model(
        "semask_swin_test_m2f", num_classes=dataset.meta.num_classes, drop_path_rate=0.0
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    totals = []
    for _ in range(8):
        loss = sum(model.losses(model(images), labels).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(float(loss.detach()))
    assert all(math.isfinite(t) for t in totals)
    assert np.mean(totals[-2:]) < 0.92 * np.mean(totals[:2]), totals  # measured: 48.99 -> 41.54


def test_config_round_trip_and_registry():
    sizes = ("tiny", "small", "base", "large", "test")
    heads = ("m2f", "fapn_m2f", "msfapn_m2f", "maskformer")
    names = {f"semask_swin_{size}_{head}" for size in sizes for head in heads}
    assert names <= set(
        semask.list_models()
    )  # 5 sizes x (Mask2Former, FaPN and MSFaPN Mask2Former, MaskFormer)
    cfg = semask.create_model("semask_swin_test_maskformer", num_classes=7).cfg
    assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(TypeError, match="unknown config fields"):
        type(cfg).from_dict({"bogus": 1})
    with pytest.raises(TypeError):
        semask.create_model("semask_swin_test_m2f", bogus=1)
    assert cfg.semantic_attention == (
        "window",
        "window",
        "window",
        "global",
    )  # MaskFormer: stage 3 always global
    assert (
        semask.create_model("semask_swin_test_m2f", num_classes=7).cfg.semantic_attention == ("window",) * 4
    )


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_full_size_official_checkpoints_convert_and_load_strictly(manifests, name):
    entry = manifests[name]
    sd = manifest_state_dict(entry)
    if name.startswith("m2f_ade"):  # what loading without _metadata into the official model produces
        sd = {
            k.replace("sem_seg_head.", "sem_seg_head.pixel_decoder.", 1) if ".pixel_decoder." in k else k: v
            for k, v in sd.items()
        }
    arch = "semask_swin_large_" + ("maskformer" if "maskformer" in name else "m2f")
    assert_manifest_converts(entry, sd, partial(convert_checkpoint, MANIFESTS[name]), arch)


def test_conversion_errors_name_the_problem(manifests):
    m2f = manifest_state_dict(manifests["m2f_ade20k_semask_swin_large"])
    with pytest.raises(CheckpointError, match="semask-m2f-d2"):
        convert_checkpoint("semask-maskformer-d2", {"model": m2f})
    with pytest.raises(CheckpointError, match="sem_seg_head.predictor.extra"):
        convert_checkpoint(
            "semask-m2f-d2", {"model": {**m2f, "sem_seg_head.predictor.extra": torch.zeros(1)}}
        )
    with pytest.raises(CheckpointError, match="num_classes=19"):
        convert_checkpoint("semask-m2f-d2", {"model": m2f}, num_classes=19)
    with pytest.raises(CheckpointError, match="FaPN"):
        convert_checkpoint(
            "semask-m2f-d2", {"model": manifest_state_dict(manifests["fapn_m2f_ade20k_semask_swin_large"])}
        )


@pytest.mark.parametrize("name", [*TEST_MODELS, "mmseg_maskformer"])
def test_aux_false_keeps_the_final_prediction_and_drops_the_intermediate_ones(name):
    torch.manual_seed(0)
    if name == "mmseg_maskformer":
        swin = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7)
        fields = dict(num_classes=5, feat_channels=32, out_channels=32, num_queries=6, dec_layers=3)
        model, layers = compose("swin_mmseg_maskformer_test", "swin", "mmseg_maskformer", swin, fields), 3
    else:
        model = semask.create_model(name, num_classes=5)
        layers = model.cfg.dec_layers
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full, final = model.eval()(x), model(x, aux=False)
        scores = model.predict(x)
    assert len(full.aux_outputs) == layers - 1 and final.aux_outputs == []
    assert torch.allclose(final.pred_logits, full.pred_logits, rtol=1e-5, atol=1e-6)
    assert torch.allclose(final.pred_masks, full.pred_masks, rtol=1e-5, atol=1e-5)
    assert torch.equal(scores, model.decoder.dense(final, (64, 64)))


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_bilinear_gather_gradients(index_dtype):
    """The hand-written backward of the deformable-attention gather (corner rows read by several bags, rows no bag
    reads, two blocks of two zero-bordered levels) against autograd's embedding_bag gradients and gradcheck."""
    torch.manual_seed(0)
    shapes, points, n = [(3, 4), (2, 2)], 3, 6
    levels, start = [], 0
    for h, w in shapes:
        levels.append((start, (h + 2) * (w + 2), w + 2))
        start += (h + 2) * (w + 2)
    block = start
    corners = []
    for (h, w), (first_row, _, width) in zip(shapes, levels, strict=True):
        row = torch.randint(0, 2, (n, 1)) * block + first_row  # the block of each bag
        first = row + torch.randint(0, h + 1, (n, points)) * width + torch.randint(0, w + 1, (n, points))
        corners.append(torch.stack([first + o for o in (0, 1, width, width + 1)], 1))  # (n, 4, P)
    index = torch.stack(corners, 1).reshape(n, -1).to(index_dtype)  # (n, L*4*P)
    table = torch.randn(2 * block, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(n, index.shape[1], dtype=torch.float64, requires_grad=True)
    grad = torch.randn(n, 4, dtype=torch.float64)
    ours = torch.autograd.grad(
        _BilinearGather.apply(table, index, weights, tuple(levels)), (table, weights), grad
    )
    ref = F.embedding_bag(index.long(), table, per_sample_weights=weights, mode="sum")
    for o, r in zip(ours, torch.autograd.grad(ref, (table, weights), grad), strict=True):
        assert torch.allclose(o, r, rtol=1e-12, atol=1e-14)
    unread = torch.ones(2 * block, dtype=torch.bool)
    unread[index.long().flatten()] = False
    assert unread.any() and torch.all(ours[0][unread] == 0)
    assert torch.autograd.gradcheck(
        lambda t, w: _BilinearGather.apply(t, index, w, tuple(levels)), (table, weights)
    )


def test_point_sample_with_shared_points_equals_per_map_points():
    torch.manual_seed(0)
    maps = torch.randn(9216, 7).t().reshape(7, 1, 96, 96)  # pixel-major, as the predicted masks
    coords = torch.rand(1, 500, 2) * 1.2 - 0.1
    shared = point_sample(maps, coords.expand(7, -1, -1))
    assert shared.shape == (7, 1, 500)
    assert torch.equal(shared, point_sample(maps.contiguous(), coords.repeat(7, 1, 1)))
