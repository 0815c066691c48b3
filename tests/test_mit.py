"""SeMask-MiT and SegFormer units (no fixtures): shapes, semantic-layer placement, per-stage attention choice,
gradients, converter reports."""

import pytest
import torch

from semask.backbones.mit import SeMaskMiT, semantic_layout
from semask.configs import load_config
from semask.convert.mit import convert_mit_imagenet, convert_segformer_official
from semask.decoders.segformer_head import SegFormerHead
from semask.engine.optim import build_optimizer
from semask.models import Segmenter
from semask.registry import create_model

TINY = dict(embed_dims=(16, 32, 48, 64), depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4))


def tiny(semantic_attention=("window", "window", "global", "global"), **kw) -> SeMaskMiT:
    torch.manual_seed(0)
    return SeMaskMiT(**TINY, num_classes=5, semantic_attention=semantic_attention, **kw)


def test_semantic_layout_follows_the_official_fpn_rule():
    assert semantic_layout(150) == ("window", "window", "global", "global")
    assert semantic_layout(19) == ("window",) * 4


@pytest.mark.parametrize("size", [(64, 64), (45, 61)])
def test_shapes_of_features_and_semantic_maps(size):
    h, w = size
    out = tiny().eval()(torch.randn(2, 3, h, w))
    sizes = [(-(-h // 4), -(-w // 4))]
    for _ in range(3):
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    assert [tuple(f.shape) for f in out.features] == [
        (2, c, *s) for c, s in zip(TINY["embed_dims"], sizes, strict=True)
    ]
    assert [tuple(m.shape) for m in out.semantic_maps] == [(2, 5, *s) for s in sizes]
    assert tiny(semantic_attention=None).eval()(torch.randn(1, 3, h, w)).semantic_maps is None


def test_per_stage_attention_choice():
    model = tiny(semantic_attention=("window", "global", "window", "global"))
    modes = [getattr(model, f"semantic_layer{s}").mode for s in range(1, 5)]
    assert modes == ["window", "global", "window", "global"]
    assert not any(k.startswith("semantic_layer") for k in tiny(semantic_attention=None).state_dict())
    with pytest.raises(ValueError, match="semantic_attention needs 4"):
        tiny(semantic_attention=("window", "global"))


def test_changing_one_stage_layout_changes_that_stage_onwards():
    """Stage 2 (8x8 map at 128 px, > window 7) windowed vs global: stages 0-1 equal, stages 2-3 differ."""
    x = torch.randn(1, 3, 128, 128)
    outs = []
    for mode in ("window", "global"):
        model = tiny(semantic_attention=("window", "window", mode, "global")).eval()
        with torch.no_grad():
            model.semantic_layer3.class_injection[0].gamma.fill_(1.0)
            outs.append(model(x).features)
    assert [torch.equal(a, b) for a, b in zip(*outs, strict=True)] == [True, True, False, False]


def test_semantic_layer_sits_between_the_blocks_and_the_stage_norm():
    """norm{s} consumes the semantic-layer output, and the next stage embeds the normalised map (= feature s)."""
    model = tiny().eval()
    seen = {}
    for s in range(1, 5):
        getattr(model, f"semantic_layer{s}").register_forward_hook(
            lambda m, a, out, s=s: seen.__setitem__(f"sem{s}", out[0])
        )
        getattr(model, f"norm{s}").register_forward_pre_hook(
            lambda m, a, s=s: seen.__setitem__(f"norm{s}", a[0])
        )
        getattr(model, f"patch_embed{s}").register_forward_pre_hook(
            lambda m, a, s=s: seen.__setitem__(f"embed{s}", a[0])
        )
    feats = model(torch.randn(1, 3, 40, 56)).features
    for s in range(1, 5):
        assert seen[f"norm{s}"] is seen[f"sem{s}"]
    for s in range(2, 5):
        assert torch.equal(seen[f"embed{s}"], feats[s - 2])


def test_gradients_reach_every_parameter():
    model = tiny(semantic_attention=("window", "window", "global", "global")).train()
    out = model(torch.randn(2, 3, 48, 48))
    loss = sum(f.square().mean() for f in out.features) + sum(m.square().mean() for m in out.semantic_maps)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert all(
        float(getattr(model, f"semantic_layer{s}").class_injection[0].gamma.grad.abs()) > 0 for s in (1, 4)
    )


def test_segformer_logits_and_rejects_a_semantic_backbone():
    backbone = tiny(semantic_attention=None)
    model = Segmenter(backbone, SegFormerHead(backbone.channels, num_classes=7, embed_dim=24)).eval()
    x = torch.randn(1, 3, 45, 61)
    assert model(x).logits.shape == (1, 7, 12, 16) and model(x).prior_logits is None
    assert model.predict_logits(x).shape == (1, 7, 45, 61)
    with pytest.raises(ValueError, match="needs a prior decoder"):
        Segmenter(tiny(), SegFormerHead(TINY["embed_dims"], num_classes=7))


def test_converters_report_unmapped_missing_and_mismatched_keys():
    backbone = tiny(semantic_attention=None)
    model = Segmenter(backbone, SegFormerHead(backbone.channels, num_classes=7, embed_dim=24))
    sd = model.state_dict()
    ckpt = {"state_dict": sd | {"decode_head.conv_seg.weight": torch.zeros(7, 128, 1, 1)}}
    converted, report = convert_segformer_official(ckpt)
    assert converted.keys() == sd.keys() and report.unmapped == report.missing == report.mismatched == []

    nvlabs = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
    nvlabs |= {"head.weight": torch.zeros(1000, 64), "head.bias": torch.zeros(1000)}
    del nvlabs["block2.1.mlp.fc2.bias"]
    nvlabs["block1.0.attn.q.weight"] = torch.zeros(16, 8)
    nvlabs["extra.weight"] = torch.zeros(3)
    _, report = convert_mit_imagenet(nvlabs)
    assert report.unmapped == ["backbone.extra.weight"]
    assert report.missing == ["backbone.block2.1.mlp.fc2.bias"]
    assert report.mismatched == ["backbone.block1.0.attn.q.weight: checkpoint (16, 8) vs model (16, 16)"]


@pytest.mark.parametrize("variant", ["mit_b0", "mit_b5"])
def test_segformer_presets_follow_the_official_recipe(variant):
    """NVlabs ``segformer.b*.512x512.ade.160k`` / ``1024x1024.city.160k`` for SegFormer and SeMask-MiT."""
    crop = 640 if variant == "mit_b5" else 512
    for arch in (f"segformer_{variant}", f"semask_{variant}"):
        ade = load_config(f"{arch}_ade20k-{crop}_160k")
        city = load_config(f"{arch}_cityscapes-1024_160k")
        for cfg, batch in ((ade, 16), (city, 8)):
            o, t = cfg.optim, cfg.train
            assert (o.lr, o.weight_decay, o.decoder_lr_mult, o.backbone_lr_mult) == (6e-5, 0.01, 10.0, 1.0)
            assert (t.max_iters, t.batch_size, t.warmup_iters, t.warmup_ratio, t.power, t.min_lr) == (
                160000,
                batch,
                1500,
                1e-6,
                1.0,
                0.0,
            )
            assert cfg.data.ratio_range == (0.5, 2.0) and cfg.data.cat_max_ratio == 0.75
        assert ade.model == {"arch": arch, "num_classes": 150} and ade.data.crop_size == (crop, crop)
        assert ade.eval.mode == "whole" and ade.data.scale == ade.eval.scale == (2048, crop)
        assert city.model == {"arch": arch, "num_classes": 19} and city.data.crop_size == (1024, 1024)
        assert (city.eval.mode, city.eval.crop, city.eval.stride) == ("slide", (1024, 1024), (768, 768))


def test_head_learning_rate_x10_and_no_decay_on_norms():
    """mmcv ``custom_keys={'norm': decay_mult 0, 'head': lr_mult 10}``: every ``decode_head.*`` parameter at 10x the
    learning rate, every ``*norm*`` parameter (block, stage, patch-embed, spatial-reduction norms) without decay."""
    cfg = load_config("segformer_mit_b0_ade20k-512_160k")
    model = create_model("segformer_mit_b0", num_classes=150)
    opt = build_optimizer(model, cfg.optim)
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        g = group_of[id(p)]
        assert g["lr"] == pytest.approx(6e-4 if name.startswith("decode_head.") else 6e-5), name
        assert g["weight_decay"] == (0.0 if "norm" in name else 0.01), name
    assert any(".attn.norm." in n for n, _ in model.named_parameters())  # spatial-reduction norm
