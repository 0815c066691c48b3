"""Converters, checkpoint reading and semask's own weight files.

Official SeMask-FPN: synthetic checkpoints with exactly the keys and shapes of the 12 official configs (manifest in
the shared fixtures). Swin ImageNet: synthetic Microsoft- and timm-layout checkpoints made from a small model.
"""

import argparse
import json
import logging
import os
import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import semask
from semask.cli import main
from semask.convert import convert_checkpoint, load_imagenet_backbone, read_checkpoint
from semask.errors import CheckpointError, ConfigError
from semask.layers.window_attention import relative_position_index
from semask.models import Segmenter, build_model
from semask.models.zoo import SeMaskFPNConfig
from semask.weights import file_sha256, save_model
from semask.weights import load as load_model

LAYOUT = {"SWSeMaskBlock": "window", "SeMaskBlock": "global"}
SMALL = SeMaskFPNConfig(
    arch="semask_swin_fpn",
    num_classes=5,
    embed_dim=16,
    depths=(2, 2, 2, 2),
    num_heads=(1, 1, 2, 2),
    decoder_channels=16,
)


@pytest.fixture(scope="module")
def manifest(fixture_path) -> dict:
    return json.loads(fixture_path("semask_fpn", "official_fpn_checkpoint_keys.json").read_text())


@pytest.fixture(scope="module")
def small_model() -> Segmenter:
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    with torch.no_grad():  # non-trivial values everywhere (gamma, BN statistics)
        for k, t in model.state_dict().items():
            if t.is_floating_point():
                t.uniform_(0.5, 1.5) if k.endswith("running_var") else t.uniform_(-0.3, 0.3)
    return model


def synthetic_official(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Meta tensors (shapes only) of the manifest; real ``relative_position_index`` values."""
    sd = {}
    for key, shape in keys.items():
        if key.endswith("relative_position_index"):
            sd[key] = relative_position_index(round(shape[0] ** 0.5))
        else:
            dtype = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
            sd[key] = torch.empty(shape, dtype=dtype, device="meta")
    return sd


def official_state_dict(model: Segmenter) -> dict[str, torch.Tensor]:
    """The official ``state_dict()`` of the same network: ours plus the persistent index buffers."""
    index = {
        f"backbone.{k}": v for k, v in model.backbone.named_buffers() if k.endswith("relative_position_index")
    }
    return {**model.state_dict(), **index}


def ms_imagenet(model: Segmenter) -> dict[str, torch.Tensor]:
    """A Microsoft ImageNet checkpoint of the model's Swin: its blocks plus head, final norm and buffers."""
    sd = {k.removeprefix("backbone."): v for k, v in official_state_dict(model).items()}
    sd = {k: v for k, v in sd.items() if re.match(r"(patch_embed|layers\.\d\.(blocks|downsample))\.", k)}
    c3, m = model.backbone.channels[3], model.cfg.window_size
    for i, depth in enumerate(model.cfg.depths):
        for j in range(1, depth, 2):
            sd[f"layers.{i}.blocks.{j}.attn_mask"] = torch.zeros(4, m * m, m * m)
    return {
        "model": {
            **sd,
            "norm.weight": torch.ones(c3),
            "norm.bias": torch.ones(c3),
            "head.weight": torch.ones(10, c3),
        }
    }


# ------------------------------------------------------------------ official SeMask-FPN (mmseg) checkpoints


def test_every_official_config_converts(manifest):
    assert len(manifest) == 12
    for name, spec in manifest.items():
        cfg, sd = convert_checkpoint(
            "semask-fpn-mmseg", {"meta": {}, "state_dict": synthetic_official(spec["keys"])}
        )
        bb = spec["backbone"]
        assert cfg.semantic_attention == tuple(LAYOUT[t] for t in spec["semantic_layer_types"]), name
        assert (cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.window_size, cfg.sem_window_size) == (
            bb["embed_dim"], tuple(bb["depths"]), tuple(bb["num_heads"]), bb["window_size"], bb["sem_window_size"]
        ), name  # fmt: skip
        assert cfg.num_classes == spec["decode_head"]["num_classes"], name
        assert (cfg.num_prior_classes or cfg.num_classes) == bb["num_cls"], name
        assert set(sd) == {k for k in spec["keys"] if not k.endswith("relative_position_index")}, name
        with torch.device("meta"):
            params = sum(p.numel() for p in build_model(cfg).parameters())
        assert params == spec["num_params"], name


def test_coco_prior_classes_are_reported(manifest, caplog):
    spec = manifest["semfpn_semask_swin_tiny_patch4_window7_512x512_80k_coco10k"]
    with caplog.at_level(logging.WARNING, logger="semask.convert"):
        cfg, _ = convert_checkpoint("semask-fpn-mmseg", synthetic_official(spec["keys"]))
    assert (cfg.num_classes, cfg.num_prior_classes) == (171, 150)
    assert "150 prior classes but the head 171" in caplog.text


def test_mmseg_checks(small_model):
    sd = official_state_dict(small_model)
    with pytest.raises(
        CheckpointError, match="num_classes=7 was requested but the checkpoint has num_classes=5"
    ):
        convert_checkpoint("semask-fpn-mmseg", sd, num_classes=7)
    with pytest.raises(CheckpointError, match="window_size=12"):
        convert_checkpoint("semask-fpn-mmseg", sd, window_size=12)
    with pytest.raises(ConfigError, match="4 of 'window'/'global'"):
        convert_checkpoint(
            "semask-fpn-mmseg", sd, semantic_attention=("window", "shifted", "global", "global")
        )
    with pytest.raises(ConfigError, match="unknown checkpoint source"):
        convert_checkpoint("semask-m2f", sd)
    bad = dict(
        sd, **{"backbone.layers.1.blocks.0.attn.relative_position_index": relative_position_index(7).flip(0)}
    )
    with pytest.raises(CheckpointError, match=r"differs .* in: \['backbone.layers.1.blocks.0"):
        convert_checkpoint("semask-fpn-mmseg", bad)


def test_mmseg_unmapped_missing_and_mismatched_keys_are_all_listed(small_model):
    sd = {"module." + k: v for k, v in official_state_dict(small_model).items()}
    sd["module.decode_head.aux.weight"] = torch.zeros(1)
    sd["module.backbone.absolute_pos_embed"] = torch.zeros(1)
    del sd["module.backbone.layers.2.blocks.1.mlp.fc2.bias"]
    del sd["module.backbone.norm3.weight"]
    sd["module.decode_head.scale_heads.1.0.conv.weight"] = torch.zeros(16, 32, 1, 1)
    with pytest.raises(CheckpointError) as err:
        convert_checkpoint("semask-fpn-mmseg", {"state_dict": sd})
    msg = str(err.value)
    for key in (
        "decode_head.aux.weight",
        "backbone.absolute_pos_embed",
        "backbone.layers.2.blocks.1.mlp.fc2.bias",
    ):
        assert key in msg
    assert "2 unmapped checkpoint keys" in msg and "2 missing model keys" in msg
    assert "scale_heads.1.0.conv.weight: checkpoint (16, 32, 1, 1) vs model (16, 32, 3, 3)" in msg


def test_plain_swin_checkpoint_and_explicit_layout(small_model):
    plain = build_model(SeMaskFPNConfig(**{**SMALL.to_dict(), "semantic_attention": None}))
    cfg, sd = convert_checkpoint("semask-fpn-mmseg", official_state_dict(plain))
    assert cfg.semantic_attention is None and cfg.arch == "swin_fpn"
    build_model(cfg).load_state_dict(sd, strict=True)
    layout = ("window", "global", "window", "global")
    cfg, _ = convert_checkpoint(
        "semask-fpn-mmseg", official_state_dict(small_model), semantic_attention=layout
    )
    assert cfg.semantic_attention == layout


# ---------------------------------------------------------------------------- Swin ImageNet checkpoints


def test_imagenet_same_window_is_exact(small_model, tmp_path):
    torch.save(ms_imagenet(small_model), tmp_path / "swin.pth")
    model = build_model(SMALL)
    report = load_imagenet_backbone(model, tmp_path / "swin.pth")
    ref, got = small_model.state_dict(), model.state_dict()
    swin = [k for k in ref if re.match(r"backbone\.(patch_embed|layers\.\d\.(blocks|downsample))\.", k)]
    assert all(torch.equal(ref[k], got[k]) for k in swin)
    assert sorted(report.not_loaded) == sorted(set(ref) - set(swin))
    assert (
        any(".semantic_layer." in k for k in report.not_loaded)
        and "backbone.norm0.weight" in report.not_loaded
    )


def test_imagenet_table_resize_to_window_12(small_model, tmp_path):
    torch.save(ms_imagenet(small_model), tmp_path / "swin.pth")
    model = build_model(SeMaskFPNConfig(**{**SMALL.to_dict(), "window_size": 12, "sem_window_size": 12}))
    load_imagenet_backbone(model, tmp_path / "swin.pth")
    key = "backbone.layers.3.blocks.1.attn.relative_position_bias_table"
    table = small_model.state_dict()[key]  # (169, 2)
    expected = F.interpolate(table.T.reshape(1, 2, 13, 13), size=(23, 23), mode="bicubic").reshape(2, 529).T
    assert model.state_dict()[key].shape == (529, 2)
    torch.testing.assert_close(model.state_dict()[key], expected)
    qkv = "backbone.layers.0.blocks.0.attn.qkv.weight"
    assert torch.equal(model.state_dict()[qkv], small_model.state_dict()[qkv])


def test_imagenet_timm_layout(small_model, tmp_path):
    sd = ms_imagenet(small_model)["model"]
    sd = {
        re.sub(r"^layers\.(\d)\.downsample", lambda m: f"layers.{int(m[1]) + 1}.downsample", k): v
        for k, v in sd.items()
    }
    sd = {k.replace("head.", "head.fc."): v for k, v in sd.items() if not k.endswith(("attn_mask", "index"))}
    torch.save(sd, tmp_path / "timm.pth")
    model = build_model(SMALL)
    load_imagenet_backbone(model, tmp_path / "timm.pth")
    key = "backbone.layers.2.downsample.reduction.weight"
    assert torch.equal(model.state_dict()[key], small_model.state_dict()[key])


def test_imagenet_key_errors_are_listed(small_model, tmp_path):
    ckpt = ms_imagenet(small_model)
    ckpt["model"]["layers.0.blocks.0.attn.extra.weight"] = torch.zeros(1)
    del ckpt["model"]["layers.1.blocks.1.mlp.fc1.bias"]
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_imagenet_backbone(build_model(SMALL), tmp_path / "bad.pth")
    assert "backbone.layers.0.blocks.0.attn.extra.weight" in str(err.value)
    assert "backbone.layers.1.blocks.1.mlp.fc1.bias" in str(err.value)
    wider = SeMaskFPNConfig(**{**SMALL.to_dict(), "num_heads": (2, 2, 2, 2)})
    torch.save(ms_imagenet(small_model), tmp_path / "swin.pth")
    with pytest.raises(CheckpointError, match="relative_position_bias_table: checkpoint"):
        load_imagenet_backbone(build_model(wider), tmp_path / "swin.pth")


def test_cli_convert_imagenet_then_load(small_model, tmp_path, capsys):
    torch.save(ms_imagenet(small_model), tmp_path / "swin.pth")
    out = tmp_path / "swin_w12.safetensors"
    assert (
        main(
            [
                "convert",
                str(tmp_path / "swin.pth"),
                str(out),
                "--from",
                "swin-imagenet",
                "--window-size",
                "12",
            ]
        )
        == 0
    )
    assert "  window_size: 12\n" in capsys.readouterr().out
    model = build_model(SeMaskFPNConfig(**{**SMALL.to_dict(), "window_size": 12}))
    load_imagenet_backbone(model, out)
    assert model.state_dict()["backbone.layers.0.blocks.0.attn.relative_position_bias_table"].shape == (
        529,
        1,
    )


# ------------------------------------------------------------------- files: reading, semask format, CLI


def test_cli_convert_mmseg_round_trip(small_model, tmp_path, capsys):
    meta = {"CLASSES": ("a", "b"), "PALETTE": np.array([[1, 2, 3]], dtype=np.uint8), "iter": np.int64(80000)}
    torch.save({"meta": meta, "state_dict": official_state_dict(small_model)}, tmp_path / "semask.pth")
    out = tmp_path / "t.safetensors"
    args = ["convert", str(tmp_path / "semask.pth"), str(out), "--from", "semask-fpn-mmseg"]
    assert (
        main([*args, "--semantic-attention", "window,window,global,global"]) == 0
    )  # SMALL's (non-official) layout
    assert f"wrote {len(small_model.state_dict())} tensors (" in capsys.readouterr().out
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        torch.testing.assert_close(load_model(out).predict_logits(x), small_model.predict_logits(x))


def test_save_load_round_trip_and_errors(small_model, tmp_path):
    path = save_model(small_model, tmp_path / "m.safetensors")
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["format"] == "semask" and meta["model"]["embed_dim"] == 16 and "semask_version" in meta
    loaded = load_model(path, sha256=file_sha256(path))
    assert not loaded.training
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in small_model.state_dict().items())
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model(path, sha256="0" * 64)
    (tmp_path / "m.json").write_text(json.dumps({**meta, "model": {**meta["model"], "num_classes": 7}}))
    with pytest.raises(CheckpointError, match="decode_head.conv_seg.weight"):
        load_model(path)
    (tmp_path / "m.json").write_text(json.dumps({**meta, "model": {**meta["model"], "bogus": 1}}))
    with pytest.raises(CheckpointError, match="bogus"):
        load_model(path)
    (tmp_path / "m.json").unlink()
    with pytest.raises(CheckpointError, match=r"m\.json: missing"):
        load_model(path)
    with pytest.raises(ConfigError, match="safetensors"):
        save_model(small_model, tmp_path / "m.pth")


def test_corrupt_and_unsafe_files(small_model, tmp_path):
    path = save_model(small_model, tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"m\.safetensors: not a readable safetensors"):
        load_model(path)
    torch.save({"state_dict": small_model.state_dict()}, tmp_path / "c.pth")
    (tmp_path / "c.pth").write_bytes((tmp_path / "c.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"c\.pth: not a readable torch checkpoint"):
        read_checkpoint(tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pth")
    torch.save({"meta": {"args": argparse.Namespace(lr=1)}, "state_dict": {}}, tmp_path / "u.pth")
    with pytest.raises(CheckpointError, match=r"argparse\.Namespace.*weights_only=False"):
        read_checkpoint(tmp_path / "u.pth")


def detectron2_resnet_key(key: str) -> str:
    """A torchvision-layout ``backbone.*`` key as detectron2 names it: the renaming of detectron2's
    ``tools/convert-torchvision-to-d2.py`` (stem, res2..res5, convK.norm, shortcut)."""
    k = key[len("backbone.") :]
    if "layer" not in k:
        k = "stem." + k
    for t in (1, 2, 3, 4):
        k = k.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        k = k.replace(f"bn{t}", f"conv{t}.norm")
    return "backbone." + k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


@pytest.mark.parametrize("project", ["mask2former", "maskformer"])
def test_original_resnet_model_zoo_pkl(tmp_path, project):
    """The original Mask2Former / MaskFormer R-50 model zoo: detectron2's ResNet names, FrozenBN (no
    num_batches_tracked), numpy arrays in a .pkl. Converts with --from {project}-d2 to resnet50_{m2f,maskformer}
    with every tensor kept and the same outputs. A narrow ResNet-50 keeps the test small; the full-size
    entrypoints have 44.0 M (Mask2Former) and 41.3 M (MaskFormer) parameters, the papers' 44 M and 41 M."""
    short = "m2f" if project == "mask2former" else project
    narrow = dict(stem_channels=16, base_channels=8, num_classes=5, hidden_dim=32, mask_dim=32, conv_dim=32)
    narrow |= dict(dim_feedforward=64, num_queries=10) | (
        {"enc_dim_feedforward": 64} if short == "m2f" else {}
    )
    torch.manual_seed(0)
    ours = semask.create_model(f"resnet50_{short}", **narrow).eval()
    state = {k: v for k, v in ours.state_dict().items() if not k.endswith("num_batches_tracked")}
    d2 = {(detectron2_resnet_key(k) if k.startswith("backbone.") else k): v.numpy() for k, v in state.items()}
    assert "backbone.res5.2.conv3.norm.running_var" in d2 and "backbone.stem.conv1.norm.weight" in d2
    with open(tmp_path / "model_final.pkl", "wb") as f:
        pickle.dump({"model": d2, "__author__": "FAIR", "matching_heuristics": True}, f)
    dst = tmp_path / "r50.safetensors"
    assert main(["convert", str(tmp_path / "model_final.pkl"), str(dst), "--from", f"{project}-d2"]) == 0
    model = load_model(dst).eval()
    assert model.cfg.arch == f"resnet50_{short}" and model.cfg.depths == (3, 4, 6, 3)
    weights = model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in state.items())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.predict_scores(x), ours.predict_scores(x))
    assert sum(p.numel() for p in semask.create_model(f"resnet50_{short}").parameters()) == (
        44_041_367 if short == "m2f" else 41_307_863
    )


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


def test_original_mask2former_model_zoo_pkl(fixture_path, tmp_path, capsys):
    """A detectron2 model-zoo ``.pkl`` of the original Mask2Former (no semantic layers): the SeMask fixture without
    its semantic layers has that layout; detectron2 pickles numpy arrays under ``model``. It converts with
    ``--from mask2former-d2`` to the plain ``swin_m2f`` with every tensor kept, loads, predicts; a .pkl that
    pickles anything else is refused without running it."""
    from safetensors.torch import load_file

    tensors = load_file(fixture_path("semask_d2", "m2f_ade_e16_w12_k150.safetensors"))
    sd = {k[len("state_dict.") :]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    plain = {k: v.numpy() for k, v in sd.items() if ".semantic_layer." not in k}
    assert len(plain) < len(sd)
    with open(tmp_path / "model_final.pkl", "wb") as f:
        pickle.dump({"model": plain, "__author__": "FAIR", "matching_heuristics": True}, f)
    dst = tmp_path / "m2f.safetensors"
    assert main(["convert", str(tmp_path / "model_final.pkl"), str(dst), "--from", "mask2former-d2"]) == 0
    model = load_model(dst)
    assert model.cfg.arch == "swin_m2f" and model.cfg.semantic_attention is None
    assert not any("semantic" in k for k in model.state_dict())
    weights = model.state_dict()
    kept = [k for k in plain if k in weights]
    assert len(kept) > 0.9 * len(plain)
    assert all(torch.equal(weights[k], torch.from_numpy(plain[k])) for k in kept)
    assert model.eval().predict(torch.randn(1, 3, 64, 64)).shape == (1, 150, 64, 64)
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump({"model": {"x": _Exploit()}}, f)
    with pytest.raises(CheckpointError, match=r"bad\.pkl: the \.pkl holds objects other than numpy.*system"):
        read_checkpoint(tmp_path / "bad.pkl")
    capsys.readouterr()
