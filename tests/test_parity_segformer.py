"""Parity with the official SegFormer (NVlabs, MiT + all-MLP head): fixture weights go through OUR converters, every
stored tensor matches (max|ours - ref| / max|ref| <= 1e-4), ``loss_seg``/``acc_seg`` to 1e-5; key maps of all 15
official configs, the 6 ImageNet backbones and the Hugging Face names.

Fixtures: ``segformer_mit/`` (see its README): B0 K=150 and a reduced-width B2 K=19.
"""

import json

import pytest
import torch
from safetensors import safe_open

from semask.backbones.mit import MIT_VARIANTS, SeMaskMiT
from semask.convert import convert_checkpoint, load_imagenet_backbone
from semask.convert.mit import (
    convert_mit_imagenet,
    convert_segformer_hf,
    convert_segformer_official,
    infer_head_arch,
    infer_mit_arch,
)
from semask.errors import CheckpointError, ConfigError
from semask.layers.impl import IMPLS, use_impl
from semask.losses.fpn import semask_fpn_loss
from semask.models import Segmenter
from semask.models.segmenter import build_model
from semask.registry import create_model

CASES = ["segformer_mitb0_k150", "segformer_mitb2_reduced_k19"]
PREFIX = "state_dict."


@pytest.fixture(scope="module")
def manifest(fixture_path) -> dict:
    return json.loads(fixture_path("segformer_mit", "official_mit_keys.json").read_text())


def load_fixture(fixture_path, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    meta = json.loads(fixture_path("segformer_mit", f"{name}.json").read_text())
    with safe_open(fixture_path("segformer_mit", f"{name}.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


def official_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The stored official ``state_dict`` (fp16 floats -> fp32)."""
    return {
        k[len(PREFIX) :]: v.float() if v.is_floating_point() else v
        for k, v in tensors.items()
        if k.startswith(PREFIX)
    }


def convert_fixture(tensors: dict[str, torch.Tensor]) -> Segmenter:
    """``semask convert --from segformer`` of the official checkpoint: the config it infers, strictly loaded."""
    cfg, sd = convert_checkpoint("segformer", {"meta": {}, "state_dict": official_state_dict(tensors)})
    model = build_model(cfg)
    model.load_state_dict(sd, strict=True)
    return model.eval()


@torch.no_grad()
def outputs(model: Segmenter, x: torch.Tensor, intermediates: bool) -> dict[str, torch.Tensor]:
    """The fixture's tensors (names without ``case{i}.``); intermediates are caught with forward hooks."""
    res: dict[str, torch.Tensor] = {}
    hooks = []

    def keep(name: str, pick):
        return lambda module, args, out: res.__setitem__(name, pick(args, out))

    if intermediates:
        bb = model.backbone
        for s in range(1, 5):
            hooks.append(
                getattr(bb, f"patch_embed{s}").register_forward_hook(keep(f"backbone.patch_embed{s}", _out0))
            )
            for j, blk in enumerate(getattr(bb, f"block{s}")):
                hooks.append(blk.register_forward_hook(keep(f"backbone.block{s}.{j}", _out)))
        fuse = model.decode_head.linear_fuse
        hooks.append(fuse.register_forward_hook(keep("head.fuse_input", _in0)))
        hooks.append(fuse.register_forward_hook(keep("head.fuse_output", _out)))
    try:
        res |= {f"backbone.feature{s}": f for s, f in enumerate(model.forward_features(x).features)}
        res["head.seg_logits"] = model(x).logits
        if intermediates:
            res["logits_full_res"] = model.predict_logits(x)
    finally:
        for h in hooks:
            h.remove()
    return res


def _out(args, out):
    return out


def _out0(args, out):
    return out[0]


def _in0(args, out):
    return args[0]


def scaled_errors(ours: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], case: int) -> dict:
    """max|ours - ref| / max|ref| per tensor (inf on a shape mismatch, NaN kept)."""
    errors = {}
    for name, value in ours.items():
        ref = tensors[f"case{case}.{name}"]
        ok = value.shape == ref.shape
        errors[name] = float((value - ref).abs().max() / ref.abs().max()) if ok else float("inf")
    return errors


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", CASES)
def test_outputs_and_losses_match_official(fixture_path, name, impl):
    meta, tensors = load_fixture(fixture_path, name)
    model = convert_fixture(tensors)
    assert sum(p.numel() for p in model.parameters()) == meta["architecture"]["num_params_excl_conv_seg"]
    for i, case in enumerate(meta["cases"]):
        x = tensors[f"case{i}.input"]
        with use_impl(impl):
            ours = outputs(model, x, intermediates=i == 0)
        stored = {k.split(".", 1)[1] for k in tensors if k.startswith(f"case{i}.")} - {"input", "label"}
        if impl == "fast":  # fuses per stage: no concatenated fuse input exists (its result: head.seg_logits)
            stored -= {"head.fuse_input", "head.fuse_output"}
        assert set(ours) == stored
        errors = scaled_errors(ours, tensors, i)
        assert all(e <= 1e-4 for e in errors.values()), errors
        losses = semask_fpn_loss(ours["head.seg_logits"], None, tensors[f"case{i}.label"].long()[:, 0])
        assert float(losses["loss_ce"]) == pytest.approx(case["loss_seg"], abs=1e-5)
        assert float(losses["acc_seg"]) == pytest.approx(case["acc_seg"], abs=1e-5)


@pytest.mark.parametrize(
    "module_type, eps",
    [("MiTBlock", 1e-5), ("OverlapPatchEmbed", 1e-6), ("EfficientSelfAttention", 1e-6), ("SeMaskMiT", 1e-5)],
)
def test_fixture_catches_a_wrong_layernorm_eps(fixture_path, module_type, eps):
    """The fixtures are eps-sensitive: each LayerNorm group at the other eps moves the logits by > 1e-4."""
    _, tensors = load_fixture(fixture_path, CASES[0])
    model = convert_fixture(tensors)
    for module in model.backbone.modules():
        if type(module).__name__ == module_type:
            for norm in module.children():
                if isinstance(norm, torch.nn.LayerNorm):
                    norm.eps = eps
    with use_impl("reference"):
        errors = scaled_errors(outputs(model, tensors["case0.input"], intermediates=False), tensors, 0)
    assert errors["head.seg_logits"] > 1e-4


def hf_state_dict(mapping: dict, flavour: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official tensors under the HF names of the fixture JSON (``kv`` split into key and value)."""
    out = {}
    for key, names in ((k, v[flavour]) for k, v in mapping.items()):
        if len(names) == 1:
            out[names[0]] = tensors[key]
        elif names:  # kv -> key, value
            out |= dict(zip(names, tensors[key].chunk(2), strict=True))
    return out


@pytest.mark.parametrize("flavour", ["hf", "hf_legacy_hub"])
def test_hf_names_convert_to_the_official_weights(fixture_path, manifest, flavour):
    """HF ``nvidia/segformer-b0`` names (transformers 5.x and Hub) -> exactly the official tensors; HF
    ``nvidia/mit-b0`` (ImageNet classifier) -> the same keys as the NVlabs ``mit_b0.pth`` conversion."""
    _, tensors = load_fixture(fixture_path, CASES[0])
    official = official_state_dict(tensors)
    hf = manifest["hf_transformers"]
    sd, report = convert_segformer_hf(hf_state_dict(hf["b0_ade_official_to_hf"], flavour, official))
    assert report.unmapped == report.missing == report.mismatched == []
    expected = {k: v for k, v in official.items() if not k.startswith("decode_head.conv_seg.")}
    assert sd.keys() == expected.keys()
    assert all(torch.equal(sd[k], expected[k]) for k in expected)

    b0 = manifest["mit_imagenet_backbones"]["mit_b0"]
    nvlabs = {
        k: torch.zeros(shape) for k, shape in (b0["keys"] | b0["imagenet_checkpoint_extra_keys"]).items()
    }
    hf_sd, hf_report = convert_segformer_hf(
        hf_state_dict(hf["mit_b0_imagenet_official_to_hf"], flavour, nvlabs)
    )
    nv_sd, nv_report = convert_mit_imagenet(nvlabs)
    assert hf_report == nv_report and hf_report.unmapped == hf_report.missing == hf_report.mismatched == []
    assert hf_sd.keys() == nv_sd.keys() and len(nv_sd) == len(b0["keys"])


def meta_tensors(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_all_official_segformer_configs_convert(manifest):
    """All 15 official configs: zero unmapped/missing keys, our model's keys and shapes equal the converted ones,
    parameter counts as listed (without the dead ``conv_seg``), the backbone is the listed ``mit_b*``."""
    configs = manifest["segformer_configs"]
    assert len(configs) == 15
    for name, cfg in configs.items():
        sd, report = convert_segformer_official({"state_dict": meta_tensors(cfg["keys"])})
        assert report.unmapped == report.missing == report.mismatched == [], name
        args = manifest["mit_imagenet_backbones"][cfg["backbone_type"]]["constructor_args"]
        arch = infer_mit_arch(sd)
        assert [list(arch[k]) for k in ("embed_dims", "depths", "sr_ratios", "mlp_ratios")] == [
            args[k] for k in ("embed_dims", "depths", "sr_ratios", "mlp_ratios")
        ], name
        assert {k: tuple(v) for k, v in MIT_VARIANTS[cfg["backbone_type"]].items()} == {
            "embed_dims": tuple(args["embed_dims"]),
            "depths": tuple(args["depths"]),
        }
        assert infer_head_arch(sd) == {
            "num_classes": cfg["decode_head"]["num_classes"],
            "embed_dim": cfg["decode_head"]["embed_dim"],
        }
        model_cfg, _ = convert_checkpoint("segformer", {"state_dict": meta_tensors(cfg["keys"])})
        assert model_cfg.arch == f"segformer_{cfg['backbone_type']}", name
        with torch.device("meta"):  # the config rebuilds it; so does the registry entry with its defaults
            models = [build_model(model_cfg), create_model(model_cfg.arch, num_classes=model_cfg.num_classes)]
        for model in models:
            assert {k: v.shape for k, v in model.state_dict().items()} == {
                k: v.shape for k, v in sd.items()
            }, name
            assert num_params(model) == cfg["num_params_excl_conv_seg"], name
            assert num_params(model.backbone) == cfg["num_params_backbone"], name


def test_imagenet_backbones_convert(manifest):
    """NVlabs ``mit_b0..b5.pth``: ``head.*`` dropped, zero unmapped/missing keys, parameter counts as listed."""
    for name, entry in manifest["mit_imagenet_backbones"].items():
        ckpt = meta_tensors(entry["keys"] | entry["imagenet_checkpoint_extra_keys"])
        sd, report = convert_mit_imagenet(ckpt)
        assert report.unmapped == report.missing == report.mismatched == [], name
        assert sd.keys() == {f"backbone.{k}" for k in entry["keys"]}
        with torch.device("meta"):
            backbone = SeMaskMiT(**MIT_VARIANTS[name])
        assert num_params(backbone) == entry["num_params"], name


def test_imagenet_weights_initialise_semask_mit(fixture_path, manifest, tmp_path):
    """``mit-imagenet`` (NVlabs file or HF ``nvidia/mit-b0`` names) -> a SeMask-MiT-B0 config and its backbone;
    ``train.pretrained`` loads the same file into SegFormer or SeMask-MiT, semantic layers and head keep their
    init; a SegFormer checkpoint is refused where a backbone is expected, and the other way round."""
    _, tensors = load_fixture(fixture_path, CASES[0])
    backbone = {k[9:]: v for k, v in official_state_dict(tensors).items() if k.startswith("backbone.")}
    nvlabs = backbone | {"head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}
    hf = hf_state_dict(manifest["hf_transformers"]["mit_b0_imagenet_official_to_hf"], "hf", nvlabs)
    for ckpt in (nvlabs, hf):
        cfg, sd = convert_checkpoint("mit-imagenet", ckpt, num_classes=11)
        assert (cfg.arch, cfg.num_classes, cfg.semantic_attention) == ("semask_mit_b0", 11, ("window",) * 4)
        assert sd.keys() == {f"backbone.{k}" for k in backbone}
        path = tmp_path / "mit_b0.pth"
        torch.save(ckpt, path)
        for arch in ("semask_mit_b0", "segformer_mit_b0"):
            model = create_model(arch, num_classes=11)
            before = {k: v.clone() for k, v in model.state_dict().items()}
            report = load_imagenet_backbone(model, path)
            after = model.state_dict()
            assert all(torch.equal(after[f"backbone.{k}"], v) for k, v in backbone.items())
            assert set(report.not_loaded) == set(after) - sd.keys()
            assert all(torch.equal(after[k], before[k]) for k in report.not_loaded)
    whole = {"state_dict": official_state_dict(tensors)}
    with pytest.raises(CheckpointError, match="--from mit-imagenet"):
        convert_checkpoint("segformer", nvlabs)
    with pytest.raises(ConfigError, match="no semantic layers"):
        convert_checkpoint("segformer", whole, semantic_attention=("window",) * 4)
    with pytest.raises(CheckpointError, match="num_classes=19 was requested"):
        convert_checkpoint("segformer", whole, num_classes=19)
