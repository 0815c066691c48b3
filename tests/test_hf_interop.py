"""Hugging Face ``transformers`` as a peer (issue 19): its Mask2Former-Swin, MaskFormer-Swin and SegFormer models,
built from small configs with random weights, converted with :mod:`semask.convert.hf`, give the same outputs in
semask; semask -> transformers -> semask is exact; folders written by ``to_hf`` load with ``from_pretrained``."""

import math
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

import semask  # noqa: E402
from semask.cli import main  # noqa: E402
from semask.convert.hf import from_hf, to_hf  # noqa: E402
from semask.errors import CheckpointError, ConfigError  # noqa: E402
from semask.layers.window_attention import relative_position_index  # noqa: E402
from semask.models import build_model  # noqa: E402
from semask.weights import save_weights  # noqa: E402

SWIN = dict(
    model_type="swin",
    embed_dim=32,
    depths=[1, 1, 2, 1],
    num_heads=[1, 2, 4, 8],
    window_size=3,
    out_features=["stage1", "stage2", "stage3", "stage4"],
)
CLASSES = ["wall", "sky", "tree", "road", "person"]
LABELS = {"id2label": dict(enumerate(CLASSES))}
CONFIGS = {
    "mask2former": dict(
        model_type="mask2former",
        backbone_config=SWIN,
        num_queries=6,
        hidden_dim=32,
        mask_feature_size=32,
        feature_size=32,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        decoder_layers=4,
        encoder_layers=2,
        num_attention_heads=2,
    ),
    "maskformer": dict(
        model_type="maskformer",
        backbone_config=SWIN,
        fpn_feature_size=32,
        mask_feature_size=32,
        decoder_config=dict(
            model_type="detr",
            d_model=32,
            decoder_layers=2,
            decoder_attention_heads=2,
            decoder_ffn_dim=64,
            num_queries=6,
        ),
    ),
    "segformer": dict(
        model_type="segformer",
        hidden_sizes=[16, 32, 48, 64],
        depths=[1, 1, 2, 1],
        num_attention_heads=[1, 2, 2, 4],
        decoder_hidden_size=32,
    ),
}
HF_CLASSES = {
    "mask2former": (
        "Mask2FormerConfig",
        "Mask2FormerForUniversalSegmentation",
        "Mask2FormerImageProcessorPil",
    ),
    "maskformer": ("MaskFormerConfig", "MaskFormerForInstanceSegmentation", "MaskFormerImageProcessorPil"),
    "segformer": ("SegformerConfig", "SegformerForSemanticSegmentation", "SegformerImageProcessorPil"),
}


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights far from transformers' small init, so that every mapped tensor matters: matrices N(0, 1/fan_in),
    norm scales 1 + N(0, 0.1^2), biases N(0, 0.1^2), BN statistics positive."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:
                p.copy_(
                    torch.randn(p.shape, generator=g) * 0.1 + (1.0 if name.endswith("norm.weight") else 0.0)
                )
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)


def _hf_model(family: str, seed: int = 0):
    config_cls, model_cls, _ = (getattr(transformers, n) for n in HF_CLASSES[family])
    model = model_cls(config_cls.from_dict(CONFIGS[family] | LABELS)).eval()
    _randomize(model, seed)
    return model


def _semask(hf) -> torch.nn.Module:
    cfg, sd = from_hf(hf.state_dict(), hf.config.to_dict())
    model = build_model(cfg).eval()
    model.load_state_dict(sd)
    return model


def _images(h: int, w: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(1))


def _assert_same_maps(ours: torch.Tensor, theirs: torch.Tensor, scores: torch.Tensor, margin: float) -> None:
    """Class maps equal wherever our top-2 score gap exceeds ``margin`` (ties may break either way)."""
    top2 = scores.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > margin
    assert clear.float().mean() > 0.95
    assert torch.equal(ours[clear], theirs[clear])


@pytest.mark.parametrize("family", ["mask2former", "maskformer"])
def test_mask_models_match_transformers(family):
    hf = _hf_model(family)
    ours = _semask(hf)
    x = _images(256, 224)  # Swin stages 64x56 ... 8x7: padded to the window of 3 inside every stage
    with torch.no_grad():
        theirs, out = hf(pixel_values=x), ours(x, priors=False)
    torch.testing.assert_close(out.pred_logits, theirs.class_queries_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.pred_masks, theirs.masks_queries_logits, atol=1e-4, rtol=0)
    positive = (out.pred_masks > 0).float().mean()  # the masked attention blocks some pixels, not all
    assert 0.05 < positive < 0.95 and out.pred_masks.std() > 0.1


@pytest.mark.parametrize("family", ["mask2former", "maskformer"])
def test_semantic_maps_match_transformers_post_processing(family):
    """Mask2Former: transformers' scores equal ours (both upsample the mask logits to the input, then sigmoid).
    MaskFormer: transformers resizes the per-class scores after the sigmoid and the einsum at stride 4, the
    official MaskFormer (and semask) the mask logits before: the scores differ by up to ~0.03, the maps agree
    wherever the top-2 gap is larger."""
    hf = _hf_model(family, seed=2)
    ours = _semask(hf)
    processor = getattr(transformers, HF_CLASSES[family][2])()
    x = _images(384, 384)  # transformers' Mask2Former resizes masks to 384 x 384 whatever the input size
    with torch.no_grad():
        theirs = processor.post_process_semantic_segmentation(
            hf(pixel_values=x), target_sizes=[(384, 384)] * 2, return_segmentation_scores=True
        )
        scores = ours.predict(x)
    theirs_scores = torch.stack([r.segmentation_scores for r in theirs])
    if family == "mask2former":
        torch.testing.assert_close(scores, theirs_scores, atol=1e-4, rtol=0)
    else:
        assert (scores - theirs_scores).abs().max() < 0.05
    margin = 1e-4 if family == "mask2former" else 0.1
    _assert_same_maps(scores.argmax(1), torch.stack([r.segmentation for r in theirs]), scores, margin)


def test_segformer_matches_transformers():
    hf = _hf_model("segformer")
    ours = _semask(hf)
    # transformers' SegFormer LayerNorms use eps 1e-5 where the official model (and semask) uses 1e-6
    for m in ours.backbone.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-5
    x = _images(128, 96)
    with torch.no_grad():
        theirs, out = hf(pixel_values=x).logits, ours(x).logits
        scores = ours.predict(x)
    torch.testing.assert_close(out, theirs, atol=1e-4, rtol=0)
    processor = transformers.SegformerImageProcessorPil()
    maps = processor.post_process_semantic_segmentation(
        transformers.modeling_outputs.SemanticSegmenterOutput(logits=theirs), target_sizes=[(128, 96)] * 2
    )
    _assert_same_maps(scores.argmax(1), torch.stack(maps), scores, 1e-4)


@pytest.mark.parametrize("family", ["mask2former", "maskformer", "segformer"])
def test_round_trip_through_transformers_is_exact(family):
    cfg, _ = from_hf(_hf_model(family).state_dict(), CONFIGS[family] | LABELS)
    model = build_model(cfg).eval()
    _randomize(model, seed=3)
    sd, config = to_hf(model, CLASSES)
    config_cls, model_cls, _ = (getattr(transformers, n) for n in HF_CLASSES[family])
    hf = model_cls(config_cls.from_dict(config)).eval()
    hf.load_state_dict(sd, strict=True)
    assert hf.config.id2label == dict(enumerate(CLASSES))
    cfg2, sd2 = from_hf(hf.state_dict(), hf.config.to_dict())
    assert cfg2 == cfg
    own = model.state_dict()
    assert sd2.keys() == own.keys()
    assert all(torch.equal(sd2[k], own[k]) for k in own)
    x = _images(160, 128, batch=1)
    with torch.no_grad():
        ours, theirs = model(x), hf(pixel_values=x)
    if family == "segformer":
        return  # the LayerNorm eps differs (see test_segformer_matches_transformers)
    torch.testing.assert_close(ours.pred_logits, theirs.class_queries_logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["mask2former", "maskformer", "segformer"])
def test_cli_export_hf_loads_with_from_pretrained_and_converts_back(tmp_path, family):
    """``semask export --format hf`` -> ``from_pretrained`` (no missing/unexpected key, same outputs) and
    ``semask convert --from hf`` -> ``semask.load`` (class names from ``id2label``)."""
    model = _semask(_hf_model(family))
    src, folder = tmp_path / "model.safetensors", tmp_path / "hf"
    save_weights(model.cfg.to_dict(), model.state_dict(), src, classes=CLASSES)
    assert main(["export", str(src), "--format", "hf", str(folder)]) == 0
    model_cls = getattr(transformers, HF_CLASSES[family][1])
    loaded, info = model_cls.from_pretrained(folder, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert loaded.config.id2label[0] == "wall"
    dst = tmp_path / "back.safetensors"
    assert main(["convert", str(folder), str(dst), "--from", "hf"]) == 0
    back, meta = semask.load(str(dst), with_info=True)
    assert meta["classes"] == CLASSES
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())
    if family != "segformer":  # (LayerNorm eps, see test_segformer_matches_transformers)
        x = _images(96, 128, batch=1)
        with torch.no_grad():
            theirs = loaded.eval()(pixel_values=x).class_queries_logits
            torch.testing.assert_close(back(x).pred_logits, theirs, atol=1e-4, rtol=0)


def test_hub_names_of_transformers_4_are_accepted():
    """The released ``facebook/mask2former-swin-*`` files use transformers 4.x names (Swin without ``swin.``,
    ``attention.self.query``, ``intermediate.dense``, persistent ``relative_position_index``)."""
    hf = _hf_model("mask2former")
    renames = [
        (r"encoder\.swin\.", "encoder."),
        (
            r"attention\.([qkv])_proj\.",
            lambda m: f"attention.self.{dict(q='query', k='key', v='value')[m[1]]}.",
        ),
        (r"attention\.relative_position_bias\.", "attention.self."),
        (r"attention\.o_proj\.", "attention.output.dense."),
        (r"(blocks\.\d+)\.mlp\.fc1\.", r"\1.intermediate.dense."),
        (r"(blocks\.\d+)\.mlp\.fc2\.", r"\1.output.dense."),
    ]
    old = {}
    for key, value in hf.state_dict().items():
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        old[key] = value
        if key.endswith("relative_position_bias_table"):
            old[key.replace("_bias_table", "_index")] = relative_position_index(3)
    assert any(".attention.self.query." in k for k in old)
    cfg, sd = from_hf(hf.state_dict(), hf.config.to_dict())
    cfg_old, sd_old = from_hf(old, hf.config.to_dict())
    assert cfg_old == cfg and sd_old.keys() == sd.keys()
    assert all(torch.equal(sd_old[k], sd[k]) for k in sd)


def test_every_unmapped_key_is_reported():
    hf = _hf_model("mask2former")
    sd = hf.state_dict() | {"model.extra.weight": torch.zeros(1), "class_head.bias": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"2 unmapped checkpoint keys(.|\n)*model\.extra\.weight"):
        from_hf(sd, hf.config.to_dict())
    del sd["model.extra.weight"], sd["class_head.bias"], sd["class_predictor.bias"]
    with pytest.raises(CheckpointError, match="missing model keys"):
        from_hf(sd, hf.config.to_dict())


def test_semantic_layers_and_other_families_are_refused():
    with pytest.raises(ConfigError, match="semantic layers"):
        to_hf(semask.create_model("semask_swin_test_m2f"))
    with pytest.raises(ConfigError, match="no transformers counterpart"):
        to_hf(semask.create_model("swin_test_fpn"))
    with pytest.raises(ConfigError, match="model_type 'upernet'"):
        from_hf({}, {"model_type": "upernet"})


def test_parameter_counts_match_transformers():
    """Full-size Swin-T Mask2Former / MaskFormer (ADE20K, 150 classes): equal parameter counts, except
    transformers' final Swin LayerNorm that no output uses (2 x 768)."""
    for family, arch in (("mask2former", "swin_tiny_m2f"), ("maskformer", "swin_tiny_maskformer")):
        config_cls, model_cls, _ = (getattr(transformers, n) for n in HF_CLASSES[family])
        swin = dict(model_type="swin", out_features=["stage1", "stage2", "stage3", "stage4"])
        config = config_cls.from_dict({"backbone_config": swin, "num_labels": 150})
        with torch.device("meta"):
            hf, ours = model_cls(config), semask.create_model(arch)
        count = sum(p.numel() for p in hf.parameters()) - 2 * 768
        assert count == sum(p.numel() for p in ours.parameters())
