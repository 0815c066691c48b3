"""The detectron2 recipe of the mask-classification models (SPEC A3 'D2'): presets, optimizer rules, shortest-edge
augmentation, score-averaging TTA, and Mask2Former through the same train / eval / predict / save-load path."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import semask
from semask.configs import list_configs, load_config
from semask.data.transforms import MEAN, STD, TrainTransform, shortest_edge_size
from semask.engine.inference import InferenceCfg, Predictor, normalize_image, predict_probs
from semask.engine.optim import build_optimizer
from semask.engine.train import experiment_model, train
from semask.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camvid_sample"


def test_paper_rows_have_presets_with_the_official_recipe():
    for size in ("tiny", "small", "base", "large"):
        assert f"semask_swin_{size}_m2f_ade20k-640_160k" in list_configs()
        assert f"semask_swin_{size}_maskformer_ade20k-640_160k" in list_configs()
        assert f"semask_swin_{size}_fapn_m2f_ade20k-640_160k" in list_configs()
        assert f"semask_swin_{size}_msfapn_m2f_ade20k-640_160k" in list_configs()
        assert f"semask_swin_{size}_m2f_cityscapes-512x1024_90k" in list_configs()
    m2f = load_config("semask_swin_large_m2f_ade20k-640_160k")
    o, t, d = m2f.optim, m2f.train, m2f.data
    assert (o.lr, o.weight_decay, o.backbone_lr_mult, o.grad_clip, o.param_rules) == (
        1e-4,
        0.05,
        0.1,
        0.01,
        "d2",
    )
    assert (t.max_iters, t.batch_size, t.power, t.warmup_iters, t.amp) == (160000, 16, 0.9, 0, "fp16")
    assert d.short_edges == tuple(range(320, 1281, 64)) and d.max_size == 2560 and d.crop_size == (640, 640)
    assert d.image_pad_value == 128 and d.cat_max_ratio == 1.0 and m2f.eval.scale == (2560, 640)
    assert m2f.eval.tta_scales == tuple((4480, s) for s in range(320, 1121, 160))
    fapn = load_config("semask_swin_large_fapn_m2f_ade20k-640_160k")
    assert (fapn.optim, fapn.train, fapn.data) == (o, t, d)
    mf = load_config("semask_swin_large_maskformer_ade20k-640_160k")
    assert (mf.optim.lr, mf.optim.weight_decay, mf.optim.backbone_lr_mult) == (6e-5, 0.01, 1.0)
    assert (mf.train.warmup_iters, mf.train.warmup_ratio, mf.train.amp) == (1500, 1e-6, "none")
    assert mf.data.short_edges == tuple(range(160, 1121, 160))
    city = load_config("semask_swin_large_m2f_cityscapes-512x1024_90k")
    assert (
        city.train.max_iters == 90000
        and city.data.crop_size == (512, 1024)
        and city.model["num_classes"] == 19
    )
    assert (
        city.data.short_edges[0] == 512 and city.data.short_edges[-1] == 2048 and city.data.max_size == 4096
    )
    assert city.eval.scale == (2048, 1024) and city.eval.tta_scales[-1] == (4096, 1792)


def test_d2_optimizer_rules():
    model = semask.create_model("semask_swin_test_m2f", num_classes=5)
    cfg = load_config("semask_swin_large_m2f_ade20k-640_160k").optim
    opt = build_optimizer(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    group = {names[id(p)]: g for g in opt.param_groups for p in g["params"]}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)
    for name, g in group.items():
        assert g["lr_mult"] == (0.1 if name.startswith("backbone.") else 1.0), name
        assert g["lr"] == pytest.approx(1e-4 * g["lr_mult"])
    no_decay = {n for n, g in group.items() if g["weight_decay"] == 0.0}
    assert "backbone.layers.0.blocks.0.attn.relative_position_bias_table" in no_decay
    assert "backbone.norm0.weight" in no_decay and "backbone.layers.0.downsample.norm.bias" in no_decay
    assert "sem_seg_head.predictor.query_feat.weight" in no_decay  # nn.Embedding
    assert "sem_seg_head.pixel_decoder.adapter_1.norm.weight" in no_decay  # GroupNorm
    assert group["backbone.layers.0.semantic_layer.class_injection.0.gamma"]["weight_decay"] == 0.05
    assert group["sem_seg_head.predictor.class_embed.weight"]["weight_decay"] == 0.05
    with pytest.raises(ConfigError, match="param_rules"):
        build_optimizer(
            model, load_config("semask_swin_large_m2f_ade20k-640_160k", ["optim.param_rules=x"]).optim
        )


@pytest.mark.parametrize(
    ("hw", "short", "max_size", "expected"),
    [
        ((360, 480), 320, 2560, (320, 427)),
        ((480, 360), 640, 0, (853, 640)),
        ((100, 1000), 640, 2560, (256, 2560)),
    ],
)
def test_shortest_edge_size_is_detectron2s(hw, short, max_size, expected):
    assert shortest_edge_size(*hw, short, max_size) == expected


def test_d2_train_transform_pads_raw_128_and_255():
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    label = np.random.default_rng(1).integers(0, 5, (90, 120), dtype=np.uint8)
    transform = TrainTransform(
        crop_size=(128, 160),
        scale=(1, 1),
        short_edges=(60,),
        photometric=False,
        flip_prob=0.0,
        image_pad_value=128,
    )
    out = transform(image, label, rng=np.random.default_rng(0))
    assert out["image"].shape == (3, 128, 160) and out["label"].shape == (128, 160)
    assert (out["label"][60:] == 255).all() and (out["label"][:, 80:] == 255).all()  # 90x120 -> 60x80
    assert set(out["label"][:60, :80].unique().tolist()) <= set(range(5))
    expected = (128 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(out["image"][:, 100, 150].numpy(), expected, rtol=1e-6)


def test_mask_model_scores_are_averaged_without_softmax():
    torch.manual_seed(0)
    model = semask.create_model("semask_swin_test_m2f", num_classes=4).eval()
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    x = normalize_image(image)
    with torch.no_grad():
        scores = model.predict(x)
        flipped = model.predict(x.flip(-1)).flip(-1)
    torch.testing.assert_close(predict_probs(model, x, InferenceCfg()), scores)
    torch.testing.assert_close(predict_probs(model, x, InferenceCfg(flip=True)), (scores + flipped) / 2)
    two = predict_probs(model, image, InferenceCfg(tta_scales=[(96, 64), (192, 128)]))  # 1x and 2x passes
    assert two.shape == scores.shape and not torch.allclose(two, scores)


def test_build_model_keeps_architecture_defaults_and_rejects_fpn_fields():
    cfg = load_config(
        "semask_swin_tiny_maskformer_ade20k-640_160k", ["model.arch=semask_swin_test_maskformer"]
    )
    assert (
        experiment_model(cfg).cfg.dropout == 0.1
    )  # MaskFormer's transformer dropout, not the FPN's Dropout2d
    cfg = load_config("semask_swin_tiny_m2f_ade20k-640_160k", ["model.arch=semask_swin_test_m2f"])
    assert experiment_model(cfg).cfg.dropout == 0.0
    with pytest.raises(ConfigError, match="decoder_channels"):
        experiment_model(
            load_config(cfg.name, ["model.arch=semask_swin_test_m2f", "model.decoder_channels=64"])
        )


def test_mask2former_trains_evaluates_predicts_and_reloads(tmp_path):
    """``semask train`` on the bundled real CamVid sample with a tiny Mask2Former and the D2 recipe."""
    overrides = [
        "model.arch=semask_swin_test_m2f",
        "model.num_classes=11",
        "model.drop_path_rate=0.0",
        "data.dataset=camvid",
        f"data.root={SAMPLE}",
        "data.short_edges=(96, 120)",
        "data.max_size=0",
        "data.crop_size=(96, 128)",
        "eval.scale=(160, 120)",
        "data.num_workers=0",
        "optim.lr=1e-3",
        "train.batch_size=2",
        "train.max_iters=12",
        "train.amp=none",
        "train.log_interval=1",
        "train.eval_interval=12",
    ]
    torch.manual_seed(0)
    metrics = train(load_config("semask_swin_tiny_m2f_ade20k-640_160k", overrides), tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert "loss_mask_0" in rows[0] and "loss_cate" in rows[0]  # deep supervision and the prior loss
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert 0 <= metrics["mIoU"] <= 100
    model, info = semask.load(tmp_path, with_info=True)
    assert (
        isinstance(model, semask.Segmenter) and model.output_kind == "scores" and info["classes"][0] == "Sky"
    )
    image = np.asarray(semask.data.read_image(next((SAMPLE / "val").iterdir())))
    pred = Predictor(model).predict(image)
    assert pred.shape == image.shape[:2] and pred.max() < 11
    semask.save_model(model, tmp_path / "m2f.safetensors")
    again = semask.load(tmp_path / "m2f.safetensors")
    assert isinstance(again, semask.Segmenter)
    np.testing.assert_array_equal(Predictor(again).predict(image), pred)
