"""Parity with the official SeMask-FPN: fixture weights go through OUR converter, outputs match tensor by tensor.

Fixtures: ``semask_fpn/*.safetensors`` (see the fixtures README); tolerance max|diff| <= 1e-4 * max(1, max|ref|).
"""

import json

import pytest
import torch
from safetensors import safe_open

from semask.convert import convert_checkpoint
from semask.layers.impl import IMPLS, use_impl
from semask.losses.fpn import semask_fpn_loss
from semask.models import Segmenter, build_model

CASES = ["semfpn_e32_w7_k150_global23", "semfpn_e32_w12_k19"]
LAYOUT = {"SWSeMaskBlock": "window", "SeMaskBlock": "global"}
PREFIX = "state_dict."


def load_fixture(fixture_path, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    meta = json.loads(fixture_path("semask_fpn", f"{name}.json").read_text())
    with safe_open(fixture_path("semask_fpn", f"{name}.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


def convert_fixture(meta: dict, tensors: dict[str, torch.Tensor]) -> Segmenter:
    """Official state dict (fp16 floats -> fp32) -> our converter -> strict load, eval mode."""
    sd = {
        k[len(PREFIX) :]: v.float() if v.is_floating_point() else v
        for k, v in tensors.items()
        if k.startswith(PREFIX)
    }
    cfg, converted = convert_checkpoint(
        "semask-fpn-mmseg",
        {"meta": {}, "state_dict": sd},
        semantic_attention=[LAYOUT[t] for t in meta["semantic_layer_types"]],
        sem_window_size=meta["official_config"]["backbone"]["sem_window_size"],
    )
    model = build_model(cfg)
    model.load_state_dict(converted, strict=True)
    return model.eval()


@torch.no_grad()
def outputs(model: Segmenter, x: torch.Tensor, full_res: bool) -> dict[str, torch.Tensor]:
    """Every tensor the fixture README names, under the fixture's names (without ``case{i}.``)."""
    feats = model.forward_features(x)
    out = model(x)
    res = {f"backbone.feature{s}": f for s, f in enumerate(feats.features)}
    res |= {f"backbone.semantic_map{s}": m for s, m in enumerate(feats.semantic_maps)}
    res |= {"head.seg_logits": out.logits, "head.semantic_logits": out.prior_logits}
    if full_res:
        res["logits_full_res"] = model.predict_logits(x)
    return res


def rel_diffs(ours: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], case: int) -> dict[str, float]:
    """max|ours - ref| / max(1, max|ref|) per tensor (inf on a shape mismatch, NaN kept as NaN)."""
    diffs = {}
    for name, value in ours.items():
        ref = tensors[f"case{case}.{name}"]
        if value.shape != ref.shape:
            diffs[name] = float("inf")
        else:
            diffs[name] = float((value - ref).abs().max() / max(1.0, float(ref.abs().max())))
    return diffs


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", CASES)
def test_outputs_and_losses_match_official(fixture_path, name, impl):
    meta, tensors = load_fixture(fixture_path, name)
    model = convert_fixture(meta, tensors)
    for i, case in enumerate(meta["cases"]):
        x = tensors[f"case{i}.input"]
        with use_impl(impl):
            ours = outputs(model, x, full_res=f"case{i}.logits_full_res" in tensors)
        assert len(ours) == len([k for k in tensors if k.startswith(f"case{i}.")]) - 2  # all but input/label
        diffs = rel_diffs(ours, tensors, i)
        assert all(d <= 1e-4 for d in diffs.values()), diffs
        losses = semask_fpn_loss(
            ours["head.seg_logits"], ours["head.semantic_logits"], tensors[f"case{i}.label"].long()[:, 0]
        )
        for key in ("loss_ce", "loss_cate", "acc_seg"):
            assert float(losses[key]) == pytest.approx(case[key], rel=1e-4), key


def test_every_weight_matters(fixture_path):
    """Perturbing any single weight tensor (BN running stats and lambda included) breaks parity.

    Exception, by the math: ``mlp_cls_k.bias``. It adds ``q_i . b`` to every score of query row i, a constant
    per softmax row, so softmax(Q K^T) is unchanged; the test asserts that invariance instead.
    """
    meta, tensors = load_fixture(fixture_path, CASES[0])
    model = convert_fixture(meta, tensors)
    x = tensors["case0.input"]
    gen = torch.Generator().manual_seed(0)
    params = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    weights = [k[len(PREFIX) :] for k, v in tensors.items() if k.startswith(PREFIX) and v.is_floating_point()]
    assert len(weights) == 206 and all(k in params for k in weights)
    invariant, undetected = [], []
    for key in weights:
        p = params[key]
        saved = p.detach().clone()
        with torch.no_grad():
            p.add_(0.5 * (saved.std(correction=0) + 0.1) * torch.randn(p.shape, generator=gen))
        worst = max(rel_diffs(outputs(model, x, full_res=False), tensors, 0).values(), default=0.0)
        with torch.no_grad():
            p.copy_(saved)
        detected = not worst <= 1e-4  # NaN (e.g. a negative running_var) counts as detected
        if key.endswith("mlp_cls_k.bias"):
            invariant.append(not detected)
        elif not detected:
            undetected.append(key)
    assert undetected == []
    assert len(invariant) == 4 and all(invariant)
