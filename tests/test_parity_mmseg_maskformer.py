"""Parity with MMSegmentation 1.2.2 / mmdet 3.3.0 MaskFormer (fixtures ``mmseg_maskformer/``, see its README):
both tiny cases (ResNet-50 and Swin) go through OUR converter, and every stored tensor matches within 1e-5 relative
(max|ours - ref| / max|ref|): preprocessing, backbone stages, pixel decoder, positions, decoder layers, per-layer
class scores and masks, seg logits, match costs, assignment and the six losses. The four full-size manifests
build with exactly their keys, shapes and parameter counts; ResNet plugs into Semantic-FPN and SeMask-Swin into
this head through the registries.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import semask
from semask.backbones.resnet import RESNET_DEPTHS, ResNet
from semask.cli import main as cli_main
from semask.configs.presets import PRESETS
from semask.convert import SOURCES, load_imagenet_backbone
from semask.convert import resnet as resnet_convert
from semask.convert.mmseg_maskformer import convert
from semask.data.transforms import normalize
from semask.decoders.maskformer.common import MaskPrediction, MaskSegOutput
from semask.decoders.mmseg_maskformer.head import MMSegMaskFormerHead
from semask.engine.optim import build_optimizer, lr_at
from semask.engine.train import experiment_model
from semask.layers.drop_path import DropPath
from semask.layers.window_attention import relative_position_index
from semask.losses.base import LossSettings
from semask.losses.criterion import build_targets
from semask.models import Segmenter, build_model, compose
from semask.registry import create_model
from semask.weights.keys import compare_keys

CASES = ["r50_tiny", "swin_tiny"]
TOL = 1e-5
MANIFESTS = {
    "maskformer_r50-d32_8xb2-160k_ade20k-512x512": "maskformer_r50_d32",
    "maskformer_r101-d32_8xb2-160k_ade20k-512x512": "maskformer_r101_d32",
    "maskformer_swin-t_upernet_8xb2-160k_ade20k-512x512": "maskformer_swin_t",
    "maskformer_swin-s_upernet_8xb2-160k_ade20k-512x512": "maskformer_swin_s",
}
PRESET_CONFIGS = {
    "maskformer_r50-d32_ade20k-512_160k": "maskformer_r50-d32_8xb2-160k_ade20k-512x512",
    "maskformer_r101-d32_ade20k-512_160k": "maskformer_r101-d32_8xb2-160k_ade20k-512x512",
    "maskformer_swin-t_ade20k-512_160k": "maskformer_swin-t_upernet_8xb2-160k_ade20k-512x512",
    "maskformer_swin-s_ade20k-512_160k": "maskformer_swin-s_upernet_8xb2-160k_ade20k-512x512",
}
# (ours, mmseg) loss names: last layer and decoder layer 0 of the 2-layer tiny head
LOSS_NAMES = {
    "loss_ce": "decode.loss_cls",
    "loss_mask": "decode.loss_mask",
    "loss_dice": "decode.loss_dice",
    "loss_ce_0": "decode.d0.loss_cls",
    "loss_mask_0": "decode.d0.loss_mask",
    "loss_dice_0": "decode.d0.loss_dice",
}


def rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max|ours - ref| / max|ref| (shapes must agree)."""
    assert tuple(ours.shape) == tuple(ref.shape), (tuple(ours.shape), tuple(ref.shape))
    ours, ref = ours.double(), ref.double()
    return ((ours - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).item()


def load_case(fixture_path, name: str) -> tuple[dict, dict, dict, Segmenter]:
    """(meta, forward tensors, train tensors, model converted from the case's mmseg weights)."""
    root = fixture_path("mmseg_maskformer", "cases", name)
    meta = json.loads((root / "meta.json").read_text())
    cfg, sd = convert({"meta": {}, "state_dict": load_file(root / "weights.safetensors")})
    # the decoder head count and FFN width of the tiny head (8 heads; the FFN width is read from the weights)
    model = build_model(cfg.replace(nheads=8))
    model.load_state_dict(sd)
    return meta, load_file(root / "forward.safetensors"), load_file(root / "train.safetensors"), model


@pytest.fixture(scope="module", params=CASES)
def case(request, fixture_path):
    return request.param, *load_case(fixture_path, request.param)


def backbone_stages(model: Segmenter, x: torch.Tensor, ref: dict) -> dict[str, torch.Tensor]:
    """Our value of every stored backbone intermediate; each stage runs on the REFERENCE input of that stage, so
    each tensor checks one stage (float rounding does not accumulate over the 16 ResNet blocks)."""
    b, out = model.backbone, {}
    if isinstance(b, ResNet):
        out["backbone.stem_out"] = F.max_pool2d(F.relu(b.bn1(b.conv1(x))), 3, stride=2, padding=1)
        prev = ref["backbone.stem_out"]
        for i in range(4):
            out[f"backbone.out{i}"] = getattr(b, f"layer{i + 1}")(prev)
            prev = ref[f"backbone.out{i}"]
        return out
    emb = b.patch_embed(x)  # (1, C, h, w)
    h, w = emb.shape[-2:]
    out["backbone.patch_embed_out"] = emb.flatten(2).transpose(1, 2)
    tokens = ref["backbone.patch_embed_out"]
    for s, stage in enumerate(b.layers):
        y = stage(tokens, h, w)[0]
        out[f"backbone.stage{s}_tokens_prenorm"] = y
        out[f"backbone.out{s}"] = getattr(b, f"norm{s}")(ref[f"backbone.stage{s}_tokens_prenorm"])
        out[f"backbone.out{s}"] = out[f"backbone.out{s}"].transpose(1, 2).reshape(1, -1, h, w)
        if stage.downsample is not None:
            out[f"backbone.stage{s}_downsampled_tokens"] = stage.downsample(
                ref[f"backbone.stage{s}_tokens_prenorm"], h, w
            )
            tokens, h, w = ref[f"backbone.stage{s}_downsampled_tokens"], (h + 1) // 2, (w + 1) // 2
    return out


@torch.no_grad()
def test_forward_every_tensor(case):
    name, meta, ref, _, model = case
    model.eval()
    raw = ref["raw_image_bgr_uint8_hwc"][0].numpy()
    ours = {"input": normalize(np.ascontiguousarray(raw[..., ::-1]))[None]}
    x = ref["input"]
    ours |= backbone_stages(model, x, ref)
    head: MMSegMaskFormerHead = model.decoder
    t = head.run([ref[f"backbone.out{i}"] for i in range(4)])
    ours |= {
        "pixel_decoder.last_feat_conv_out": t.levels[0],
        "pixel_decoder.output_convs2_out": t.levels[1],
        "pixel_decoder.output_convs1_out": t.levels[2],
        "pixel_decoder.mask_features": t.levels[-1],
        "pixel_decoder.memory": head.pixel_decoder([ref[f"backbone.out{i}"] for i in range(4)])[1],
        "head.memory_proj": t.memory_proj,
        "head.pos_embed": t.pos_embed,
        "head.out_dec": t.out_dec,
        "head.all_cls_scores": t.cls_scores,
        "head.all_mask_preds": t.mask_preds,
    }
    ours |= {f"head.decoder_layer{i}_out_prenorm": o for i, o in enumerate(t.layer_outputs)}
    out = head([ref[f"backbone.out{i}"] for i in range(4)])
    seg = head.dense(out, tuple(x.shape[-2:]))
    ours["head.seg_logits"] = seg
    ours["predict_ori100x125.seg_logits"] = F.interpolate(
        seg, (100, 125), mode="bilinear", align_corners=False
    )
    assert not ref["head.padding_mask"].any()  # mmseg never masks: our head has no padding mask
    skip = {"raw_image_bgr_uint8_hwc", "head.padding_mask", "predict.pred_sem_seg"}
    assert set(ref) - skip == set(ours)
    bad = {k: r for k in ours if (r := rel(ours[k], ref[k].float())) > TOL}
    assert not bad, bad
    # end to end from the image: the whole network and Segmenter.predict (ResNet: rounding of 16 blocks in float32,
    # the reference itself is 3e-5 from a float64 run)
    pred = model.predict(x)
    assert rel(pred, ref["head.seg_logits"]) < (3e-5 if name == "r50_tiny" else TOL)
    assert torch.equal(pred.argmax(1, keepdim=True), ref["predict.pred_sem_seg"])


def train_mode(model: Segmenter) -> None:
    """``model.train()`` with dropout, drop path and attention dropout off (the fixture's deterministic loss)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout | DropPath | nn.MultiheadAttention):
            m.eval()


def test_train_outputs_costs_assignment_and_losses(case):
    name, meta, _, ref, model = case
    train_mode(model)
    # norm_eval: every ResNet BatchNorm stays on its running statistics in train mode
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    out = model(ref["input"])
    labels = ref["gt_sem_seg"][:, 0].long()
    b = model.backbone(ref["input"]).features
    t = model.decoder.run(b)
    tol = 3e-5 if name == "r50_tiny" else TOL  # whole-network float32 rounding, see test_forward_every_tensor
    for i in (1, 2, 3):
        assert rel(b[i], ref[f"backbone.out{i}"]) < tol
    for key, value in (("memory_proj", t.memory_proj), ("out_dec", t.out_dec)):
        assert rel(value, ref[f"head.{key}"]) < tol
    assert rel(t.cls_scores, ref["head.all_cls_scores"]) < tol
    assert rel(t.mask_preds, ref["head.all_mask_preds"]) < tol

    # criterion on the REFERENCE head outputs: costs, assignment and losses in isolation
    cls, masks = ref["head.all_cls_scores"], ref["head.all_mask_preds"]
    ref_out = MaskSegOutput(cls[-1], masks[-1], [MaskPrediction(cls[0], masks[0])], [])
    targets = build_targets(labels)
    matcher = model.criterion.matcher
    for img, tgt in enumerate(targets):
        assert torch.equal(tgt.labels, ref[f"assign.layer0.img{img}.gt_labels"])
        down = F.interpolate(tgt.masks[:, None], size=masks.shape[-2:], mode="nearest")[:, 0]
        assert torch.equal(down, ref[f"assign.img{img}.gt_masks_downsampled"].float())
        for layer in range(2):
            terms = matcher.cost_terms(cls[layer, img], masks[layer, img], tgt)
            for term, value in zip(("cost_cls", "cost_mask_focal", "cost_dice"), terms, strict=True):
                assert rel(value, ref[f"assign.layer{layer}.img{img}.{term}"]) < TOL, (layer, img, term)
    losses, indices = model.criterion(ref_out, None, labels)
    # our prediction sets are (last, layer 0); mmseg's layer index l
    for ours_set, layer in ((0, 1), (1, 0)):
        for img, (q, g) in enumerate(indices[ours_set]):
            gt_inds = torch.zeros(cls.shape[2], dtype=torch.int64)
            gt_inds[q] = g + 1
            assert torch.equal(gt_inds, ref[f"assign.layer{layer}.img{img}.gt_inds"]), (layer, img)
    weighted = model.criterion.weigh(losses)
    for ours_key, ref_key in LOSS_NAMES.items():
        assert rel(weighted[ours_key], ref[f"loss.{ref_key}"]) < TOL, ours_key
    assert rel(sum(weighted.values()), ref["loss.total"]) < TOL
    assert meta["loss_total"] == pytest.approx(ref["loss.total"].item())

    # end to end: the segmenter's own losses on its own train-mode outputs
    ours = model.losses(out, labels, LossSettings())
    assert set(ours) == set(LOSS_NAMES)
    assert rel(sum(ours.values()), ref["loss.total"]) < tol


@pytest.mark.parametrize("config, arch", MANIFESTS.items())
def test_manifest_keys_shapes_and_parameter_counts(fixture_path, config, arch):
    manifest = json.loads(fixture_path("mmseg_maskformer", "manifests", f"{config}.json").read_text())
    with torch.device("meta"):
        model = create_model(arch)
        sd = {e["key"]: torch.empty(e["shape"]) for e in manifest["state_dict"]}
    sd = {
        k: relative_position_index(7) if k.endswith("relative_position_index") else v for k, v in sd.items()
    }
    params = sum(p.numel() for p in model.parameters())
    assert params == manifest["total_params"] == manifest["trainable_params"]
    assert sum(p.numel() for p in model.backbone.parameters()) == manifest["backbone_params"]
    assert sum(p.numel() for p in model.decoder.parameters()) == manifest["decode_head_params"]
    cfg, converted = convert({"meta": {}, "state_dict": sd})
    assert cfg.to_dict() == model.cfg.to_dict()
    expected = {k: v.shape for k, v in model.state_dict().items()}
    report = compare_keys(converted, expected)
    assert not (report.unmapped or report.missing or report.mismatched)
    if cfg.backbone_name == "resnet":  # the ResNet models hold exactly the mmseg keys
        assert set(model.state_dict()) == set(sd)


def test_convert_cli_maps_every_key(fixture_path, tmp_path, capsys):
    root = fixture_path("mmseg_maskformer", "cases", "swin_tiny")
    src = tmp_path / "maskformer.pth"
    weights = load_file(root / "weights.safetensors")
    torch.save({"meta": {}, "state_dict": weights}, src)
    assert "mmseg-maskformer" in SOURCES
    dst = tmp_path / "out.safetensors"
    assert cli_main(["convert", str(src), str(dst), "--from", "mmseg-maskformer"]) == 0
    model = semask.load(str(dst))
    assert model.cfg.arch == "maskformer_swin"
    converted = {k: v for k, v in model.state_dict().items()}
    relative = [k for k in weights if k.endswith("relative_position_index")]
    assert len(converted) == len(weights) - len(relative)


def test_resnet_plugs_into_semantic_fpn_and_semask_swin_into_this_head():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 4, (2, 64, 64))
    fpn = create_model("resnet50_fpn", num_classes=4, base_channels=8, stem_channels=8, decoder_channels=32)
    out = fpn(x)
    assert out.logits.shape == (2, 4, 16, 16)
    assert fpn.predict(x).shape == (2, 4, 64, 64)
    assert torch.isfinite(sum(fpn.losses(out, labels).values()))

    semask_swin = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7)
    fields = dict(num_classes=4, feat_channels=32, out_channels=32, num_queries=6, dec_layers=2)
    layout = {"semantic_attention": ("window", "window", "global", "global")}
    model = compose("semask_swin_mmseg_maskformer", "swin", "mmseg_maskformer", semask_swin | layout, fields)
    model.train()
    out = model(x)
    assert out.prior_logits.shape == (2, 4, 64, 64)
    losses = model.losses(out, labels)
    assert {"loss_cate", "loss_ce", "loss_mask", "loss_dice", "loss_ce_0"} <= set(losses)
    sum(losses.values()).backward()
    assert model.backbone.layers[0].semantic_layer is not None
    assert model.predict(x).shape == (2, 4, 64, 64)


def exec_config(path) -> dict:
    """The top-level names of an mmengine config file (plain Python; ``_base_`` is not followed)."""
    names: dict = {}
    exec(path.read_text(), names)
    return names


@pytest.mark.parametrize("preset, config", PRESET_CONFIGS.items())
def test_presets_follow_the_mmseg_recipes(fixture_path, preset, config):
    root = fixture_path("mmseg_maskformer", "recipes")
    own = exec_config(root / f"{config}.py")
    r50 = exec_config(root / "maskformer_r50-d32_8xb2-160k_ade20k-512x512.py")  # the Swin configs' _base_
    data = exec_config(root / "_base_datasets_ade20k.py")
    schedule = exec_config(root / "_base_schedules_schedule_160k.py")
    exp = PRESETS[preset]()
    merged = r50 | own  # top-level names the row's file sets replace the base's (mmengine merge)
    opt, wrapper, steps = merged["optimizer"], merged["optim_wrapper"], merged["param_scheduler"]
    assert (exp.optim.lr, exp.optim.weight_decay, exp.optim.betas) == (
        opt["lr"],
        opt["weight_decay"],
        opt["betas"],
    )
    assert exp.optim.grad_clip == wrapper["clip_grad"]["max_norm"]
    assert exp.optim.backbone_lr_mult == wrapper["paramwise_cfg"]["custom_keys"]["backbone"]["lr_mult"]
    poly, warmup = steps[-1], [s for s in steps if s["type"] == "LinearLR"]
    assert poly["type"] == "PolyLR" and poly["eta_min"] == exp.train.min_lr
    assert exp.train.power == poly["power"]
    assert exp.train.max_iters == poly["end"] == schedule["train_cfg"]["max_iters"]
    assert exp.train.warmup_iters == (warmup[0]["end"] if warmup else 0)
    if warmup:
        assert exp.train.warmup_ratio == warmup[0]["start_factor"]
    assert poly["begin"] == (exp.train.warmup_iters if exp.train.poly_after_warmup else 0)
    assert exp.train.batch_size == 8 * r50["train_dataloader"]["batch_size"]  # 8 GPUs x 2 ("8xb2")
    assert exp.train.eval_interval == schedule["train_cfg"]["val_interval"]
    train = {t["type"]: t for t in data["train_pipeline"]}
    assert exp.data.scale == train["RandomResize"]["scale"]
    assert exp.data.ratio_range == train["RandomResize"]["ratio_range"]
    assert exp.data.crop_size == train["RandomCrop"]["crop_size"] == r50["crop_size"]
    assert exp.data.cat_max_ratio == train["RandomCrop"]["cat_max_ratio"]
    assert exp.data.flip_prob == train["RandomFlip"]["prob"] and exp.data.photometric
    test = {t["type"]: t for t in data["test_pipeline"]}
    assert exp.eval.scale == test["Resize"]["scale"] and exp.eval.mode == r50["model"]["test_cfg"]["mode"]
    assert exp.eval.tta_ratios == tuple(data["img_ratios"]) and exp.eval.flip
    with torch.device("meta"):
        model = create_model(exp.model["arch"], **exp.model)
    assert model.num_classes == r50["num_classes"]
    backbone = merged["model"]["backbone"]
    if "depth" in backbone:
        assert model.cfg.depths == RESNET_DEPTHS[backbone["depth"]]
    else:
        assert model.cfg.depths == tuple(own["depths"]) and model.cfg.semantic_attention is None


@pytest.mark.parametrize("config", list(MANIFESTS)[:2])
def test_torchvision_resnet_weights_cover_the_backbone(fixture_path, config, tmp_path):
    """torchvision layout = the manifest's backbone keys without ``backbone.``, plus the ImageNet ``fc``."""
    manifest = json.loads(fixture_path("mmseg_maskformer", "manifests", f"{config}.json").read_text())
    with torch.device("meta"):
        sd = {
            e["key"][9:]: torch.empty(e["shape"])
            for e in manifest["state_dict"]
            if e["key"][:9] == "backbone."
        }
        sd |= {"fc.weight": torch.empty(1000, 2048), "fc.bias": torch.empty(1000)}
        cfg, converted = resnet_convert.convert(sd)
        model = create_model(cfg.arch)
    assert cfg.arch == MANIFESTS[config]
    assert set(converted) == {k for k in model.state_dict() if k.startswith("backbone.")}

    # a real load: the r50_tiny backbone saved as a torchvision file
    weights = load_file(fixture_path("mmseg_maskformer", "cases", "r50_tiny", "weights.safetensors"))
    tv = {k[9:]: v for k, v in weights.items() if k.startswith("backbone.")}
    torch.save(tv | {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, tmp_path / "r50.pth")
    model = create_model(
        "maskformer_resnet", num_classes=5, stem_channels=16, base_channels=16, feat_channels=64
    )
    report = load_imagenet_backbone(model, tmp_path / "r50.pth")  # what train.pretrained runs
    assert report.not_loaded and all(k.startswith("decode_head.") for k in report.not_loaded)
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in tv.items())
    out = tmp_path / "r50_backbone.safetensors"
    assert cli_main(["convert", str(tmp_path / "r50.pth"), str(out), "--from", "resnet-imagenet"]) == 0
    assert set(load_file(out)) == {f"backbone.{k}" for k in tv}


def test_onnx_export_matches_pytorch(fixture_path, tmp_path):
    """The converted r50_tiny model exported at the fixture size; onnxruntime on the fixture's batch-1 and
    batch-2 inputs and on a size that is not a multiple of 4."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'semask[onnx]')")
    from semask.tools.export import export_onnx, onnx_max_rel_diff

    _, forward, train, model = load_case(fixture_path, "r50_tiny")
    path = export_onnx(model, tmp_path / "maskformer.onnx", size=(128, 160))
    images = [forward["input"], train["input"], train["input"][:, :, :125, :150]]
    assert onnx_max_rel_diff(path, model, images) <= 1e-4


def test_norm_eval_keeps_running_statistics_also_with_synchronised_bn():
    """mmseg ``norm_eval=True``: in train mode the (DDP-synchronised) BatchNorms use their running statistics, so
    a train-mode forward equals the eval-mode one; ``norm_eval=False`` trains them."""
    from semask.engine.sync_bn import DistBatchNorm2d, convert_sync_batchnorm

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    backbone = convert_sync_batchnorm(ResNet(stem_channels=8, base_channels=8), torch.device("cpu"))
    assert all(type(m) is not nn.BatchNorm2d for m in backbone.modules())
    assert any(isinstance(m, DistBatchNorm2d) for m in backbone.modules())
    with torch.no_grad():
        ref = backbone.eval()(x).features
        out = backbone.train()(x).features
    assert all(torch.equal(a, b) for a, b in zip(out, ref, strict=True))
    trained = ResNet(stem_channels=8, base_channels=8, norm_eval=False).train()
    assert all(m.training for m in trained.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("preset, config", [(p, c) for p, c in PRESET_CONFIGS.items() if "r101" not in p])
def test_weight_decay_exemptions_follow_the_mmseg_custom_keys(fixture_path, preset, config):
    """The parameters without weight decay are exactly those matched by a ``decay_mult=0`` custom key of the
    config (mmseg's Swin names ``backbone.stages.*`` are our ``backbone.layers.*``); ResNet: none."""
    own = exec_config(fixture_path("mmseg_maskformer", "recipes") / f"{config}.py")
    keys = own.get("custom_keys", {})
    exempt = [
        k.replace("backbone.stages.", "backbone.layers.") for k, v in keys.items() if v.get("decay_mult") == 0
    ]
    exp = PRESETS[preset]()
    model = experiment_model(exp)
    opt = build_optimizer(model, exp.optim)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert decay[id(p)] == (0.0 if any(k in name for k in exempt) else exp.optim.weight_decay), name
    assert ("swin" in preset) == bool(exempt)


def test_poly_starts_after_the_warmup_as_mmengine():
    """mmengine LinearLR(start_factor, end=W) then PolyLR(begin=W, end=T): full rate at W, poly over T - W."""
    t = PRESETS["maskformer_swin-t_ade20k-512_160k"]().train
    assert lr_at(0, 1.0, t) == pytest.approx(1e-6)
    assert lr_at(750, 1.0, t) == pytest.approx(1e-6 + (1 - 1e-6) * 0.5)
    assert lr_at(1500, 1.0, t) == 1.0
    assert lr_at(1500 + (160000 - 1500) // 2, 1.0, t) == pytest.approx(0.5, abs=1e-5)
