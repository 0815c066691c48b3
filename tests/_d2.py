"""Helpers of the detectron2 parity tests (``test_parity_d2``, ``test_fapn``, ``test_export_mask``): fixture
loading through our converters, every stored tensor recomputed, losses and matchings replayed, fp32 noise floors
and weight perturbations.

Criteria (see ``test_parity_d2``'s docstring for the reasoning):

- tensors: max|diff| <= tol * max(1, max|ref|) with tol = max(1e-4, 4 x fp32 noise floor), capped at 2e-3;
  attention masks exact;
- losses: ``replay``/``official`` within 1e-5 relative (1e-4 for Mask2Former ``official``), or the floor;
- matched indices exact, except at fp32 ties (the reference assignment must cost the same under our costs).
"""

import json
import math
import re
from collections.abc import Callable

import pytest
import torch
from safetensors import safe_open

import semask
from semask.decoders.maskformer.common import MaskSegOutput
from semask.decoders.maskformer.head import semantic_inference
from semask.decoders.priors import D2PriorDecoder
from semask.layers.window_attention import relative_position_index
from semask.losses.base import LossSettings
from semask.losses.criterion import build_targets
from semask.losses.points import ReplayPoints
from semask.models import ModelConfig, Segmenter, build_model

Converter = Callable[[dict], tuple[ModelConfig, dict[str, torch.Tensor]]]
LAYOUT = {"SWSeMaskBlock": "window", "SeMaskBlock": "global"}
PREFIX = "state_dict."
ULP, CAP = 2.0**-23, 2e-3


def bilinear_corners(y: float, x: float, h: int, w: int) -> list[tuple[int, int, float]]:
    """The (row, col, weight) corners of bilinear sampling at (y, x) in pixel units of an h x w map, those outside
    the map dropped (zero padding): the plain loops that the MSDeformAttn and DCN kernels are checked against."""
    y0, x0 = math.floor(y), math.floor(x)
    corners = (
        (y0, x0, (y0 + 1 - y) * (x0 + 1 - x)),
        (y0, x0 + 1, (y0 + 1 - y) * (x - x0)),
        (y0 + 1, x0, (y - y0) * (x0 + 1 - x)),
        (y0 + 1, x0 + 1, (y - y0) * (x - x0)),
    )
    return [(yy, xx, wt) for yy, xx, wt in corners if 0 <= yy < h and 0 <= xx < w]


def load_fixture(
    fixture_path, name: str, convert: Converter
) -> tuple[dict, dict[str, torch.Tensor], Segmenter]:
    """Fixture metadata, tensors and the converted model (official state dict, fp16 -> fp32, strict load)."""
    meta = json.loads(fixture_path("semask_d2", f"{name}.json").read_text())
    with safe_open(fixture_path("semask_d2", f"{name}.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    sd = {
        k[len(PREFIX) :]: v.float() if v.is_floating_point() else v
        for k, v in tensors.items()
        if k.startswith(PREFIX)
    }
    cfg, converted = convert({"model": sd})  # layout and sem window: per-project rules
    assert cfg.semantic_attention == tuple(LAYOUT[t] for t in meta["semantic_layer_types"])
    assert cfg.sem_window_size == meta["semantic_layer_window_sizes"][0]
    model = build_model(cfg)
    model.load_state_dict(converted, strict=True)
    assert sum(p.numel() for p in model.parameters()) == meta["n_params"]
    return meta, tensors, model.eval()


@torch.no_grad()
def run_case(model: Segmenter, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], MaskSegOutput]:
    """Every tensor the fixture README names (without ``case{i}.``), and the output the losses take. FaPN: the
    inputs and output of every ``align_k.dcpack_L2`` (DCN) are recorded with forward hooks."""
    res: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module, args, output):
            res[f"pixel_decoder.{name}.dcn_feat_in"], res[f"pixel_decoder.{name}.dcn_offset_in"] = args
            res[f"pixel_decoder.{name}.dcn_out"] = output

        return hook

    hooks = [
        module.dcpack_L2.register_forward_hook(record(name))
        for name, module in model.sem_seg_head.pixel_decoder.named_children()
        if name.startswith("align_")
    ]
    try:
        feats = model.backbone(model.pad(x))
        pix, pred = model.sem_seg_head.run(feats.features)
    finally:
        for h in hooks:
            h.remove()
    prior = D2PriorDecoder()(feats.semantic_maps)
    res |= {f"backbone.res{s + 2}": f for s, f in enumerate(feats.features)}
    res |= {f"backbone.sem_res{s + 2}": m for s, m in enumerate(feats.semantic_maps)}
    res |= {"pixel_decoder.mask_features": pix.mask_features, "pixel_decoder.fpn_res2": pix.fpn_res2}
    res |= {
        f"pixel_decoder.multi_scale_features.{j}": f for j, f in enumerate(pix.multi_scale_features or [])
    }
    res |= {"predictor.pred_logits": pred.pred_logits, "predictor.pred_masks": pred.pred_masks}
    for j, aux in enumerate(pred.aux_outputs):
        res |= {
            f"predictor.aux_outputs.{j}.pred_logits": aux.pred_logits,
            f"predictor.aux_outputs.{j}.pred_masks": aux.pred_masks,
        }
    res |= {f"predictor.attn_mask.{j}": m.to(torch.uint8) for j, m in enumerate(pred.attn_masks)}
    res |= {
        "sem_head.pred": prior,
        "semseg": semantic_inference(pred.pred_logits, pred.pred_masks, x.shape[-2:]),
    }
    out = MaskSegOutput(pred.pred_logits, pred.pred_masks, pred.aux_outputs, pred.attn_masks, prior)
    return res, out


def case_refs(tensors: dict[str, torch.Tensor], case: int) -> dict[str, torch.Tensor]:
    """The stored outputs of a case (without ``case{i}.``; inputs, labels and loss coordinates left out)."""
    prefix = f"case{case}."
    return {
        k[len(prefix) :]: v
        for k, v in tensors.items()
        if k.startswith(prefix) and not re.match(r"input|loss", k[len(prefix) :])
    }


def rel_diffs(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, float]:
    """max|ours - ref| / max(1, max|ref|) per tensor ref holds (masks: count of differing entries)."""
    out = {}
    for name, r in ref.items():
        o = ours[name]
        if o.shape != r.shape:
            out[name] = float("inf")
        elif r.dtype == torch.uint8:
            out[name] = float((o != r).sum())
        else:
            out[name] = float((o - r).abs().max() / max(1.0, float(r.abs().max())))
    return out


def replay_points(tensors: dict[str, torch.Tensor], case: int) -> ReplayPoints:
    """The stored ``loss_replay`` coordinates of a case, keyed as the criterion asks for them."""
    head = f"case{case}.loss_replay."
    matcher = {
        tuple(map(int, k.split(".")[-2:])): v for k, v in tensors.items() if k.startswith(head + "matcher")
    }
    loss = {int(k.split(".")[-1]): v for k, v in tensors.items() if k.startswith(head + "mask_point")}
    return ReplayPoints(matcher, loss)


@torch.no_grad()
def losses_and_indices(
    model: Segmenter, out: MaskSegOutput, labels: torch.Tensor, mode: dict, tensors, case: int
):
    """(unweighted, weighted, indices) of one loss capture: ``replay`` or ``official`` (seeded RNG)."""
    sampler = replay_points(tensors, case) if mode["name"] == "replay" else None
    if mode["name"] == "official" and mode["num_points"]:
        torch.manual_seed(mode["seed"])  # official: seed right before the criterion call
    unweighted, indices = model.criterion(out, out.prior_logits, labels, sampler)
    if mode["num_points"] and mode["name"] == "official":
        torch.manual_seed(mode["seed"])
    weighted = model.criterion.losses(out, labels, LossSettings(), sampler)  # same draws
    return unweighted, weighted, indices


def loss_modes(case: dict) -> list[dict]:
    return [{"name": k, **v} for k, v in case["loss"].items() if v is not None]


def scaled_weights(model: Segmenter, factor: float) -> dict[str, torch.Tensor]:
    """Multiply every float parameter by ``factor`` in place; returns the originals."""
    saved = {k: p.detach().clone() for k, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return saved


def restore(model: Segmenter, saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(saved[k])


def check_indices(model: Segmenter, out: MaskSegOutput, labels, ours, ref, sampler) -> list[str]:
    """Layers/images whose matching differs from the reference without being an fp32 tie."""
    bad, targets = [], build_targets(labels)
    preds = [out, *out.aux_outputs]
    for layer, (ours_l, ref_l) in enumerate(zip(ours, ref, strict=True)):
        for b, ((rows, cols), (ref_rows, ref_cols)) in enumerate(zip(ours_l, ref_l, strict=True)):
            if rows.tolist() == ref_rows and cols.tolist() == ref_cols:
                continue
            if sampler is None and model.criterion.num_points is not None:
                bad.append(
                    f"layer {layer} image {b}: random matcher points cannot be re-drawn to check a tie"
                )
                continue
            cost = model.criterion.matcher.cost_matrix(
                preds[layer].pred_logits[b], preds[layer].pred_masks[b], targets[b], layer, b, sampler
            )
            best, theirs = float(cost[rows, cols].sum()), float(cost[ref_rows, ref_cols].sum())
            if abs(theirs - best) > 1e-5 * max(1.0, abs(best)):
                bad.append(
                    f"layer {layer} image {b}: ours {rows.tolist()}->{cols.tolist()} cost {best}, ref {theirs}"
                )
    return bad


def assert_fixture_parity(meta: dict, tensors: dict[str, torch.Tensor], model: Segmenter) -> dict[str, float]:
    """Every stored tensor, loss and matching of every case, within the criteria above.

    Returns:
        ``{"case{i}.<tensor>": relative diff}`` (masks: number of differing entries).
    """
    measured = {}
    for i, case in enumerate(meta["cases"]):
        x, labels = tensors[f"case{i}.input"], tensors[f"case{i}.loss.seg_maps"].long()
        assert torch.equal(model.pad(x), tensors[f"case{i}.input_padded"])
        ours, out = run_case(model, x)
        ref = case_refs(tensors, i)
        assert set(ref) <= set(ours) and len(ours) - len(ref) == (0 if "sem_head.pred" in ref else 1)
        with torch.no_grad():
            assert torch.equal(model.predict(x), ours["semseg"])  # the public inference path
        saved = scaled_weights(model, 1 + ULP)
        perturbed, pert_out = run_case(model, x)
        pert_losses = {
            m["name"]: losses_and_indices(model, pert_out, labels, m, tensors, i)[0] for m in loss_modes(case)
        }
        restore(model, saved)
        floor = rel_diffs(perturbed, {k: ours[k] for k in ref})
        diffs = rel_diffs(ours, ref)
        measured |= {f"case{i}.{k}": d for k, d in diffs.items()}
        failed = {
            k: (d, floor[k])
            for k, d in diffs.items()
            if (d != 0 if ref[k].dtype == torch.uint8 else not d <= min(CAP, max(1e-4, 4 * floor[k])))
        }
        assert not failed, f"case {i} (diff, fp32 noise floor): {failed}"
        for mode in loss_modes(case):
            unweighted, weighted, indices = losses_and_indices(model, out, labels, mode, tensors, i)
            tol = 1e-4 if mode["name"] == "official" and mode["num_points"] else 1e-5
            for kind, values in (("unweighted", unweighted), ("weighted", weighted)):
                assert list(values) == list(mode[kind]), (mode["name"], kind)
                for key, expected in mode[kind].items():
                    base = float(unweighted[key])
                    floor_k = abs(float(pert_losses[mode["name"]][key]) - base) / max(abs(base), 1e-12)
                    # a loss is no more precise than the outputs it is computed from (ill-conditioned case 1)
                    rel = min(CAP, max(tol, 4 * floor_k, max(floor.values())))
                    assert float(values[key]) == pytest.approx(expected, rel=rel, abs=1e-7), (
                        mode["name"],
                        kind,
                        key,
                    )
                    if kind == "unweighted":
                        measured[f"case{i}.loss.{mode['name']}.{key}"] = abs(
                            float(values[key]) - expected
                        ) / max(abs(expected), 1e-12)
            sampler = replay_points(tensors, i) if mode["name"] == "replay" else None
            bad = check_indices(model, out, labels, indices, mode["matched_indices"], sampler)
            assert not bad, (mode["name"], bad)
    return measured


def module_families(keys: list[str]) -> list[str]:
    """One float tensor per module family: indices replaced by '#', the LAST module of each family (e.g. the last
    decoder layer: the first MaskFormer self-attention only ever sees identical zero queries), its weight if any."""
    chosen: dict[str, str] = {}
    for key in keys:
        module, param = key.rsplit(".", 1)
        family = re.sub(r"\.\d+(?=\.|$)", ".#", module)
        if family not in chosen or param == "weight" or not chosen[family].endswith(".weight"):
            chosen[family] = key
    return sorted(chosen.values())


def fixture_float_keys(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The official state-dict keys of the fixture's float tensors."""
    return [k[len(PREFIX) :] for k, v in tensors.items() if k.startswith(PREFIX) and v.is_floating_point()]


def perturbations_that_keep_parity(
    meta: dict, tensors: dict[str, torch.Tensor], model: Segmenter, keys: list[str]
) -> list[str]:
    """The keys of ``keys`` whose random perturbation (one at a time) leaves every case-0 output and loss within
    1e-4 / 1e-5 of the reference; asserts first that the unperturbed model passes."""
    x, labels = tensors["case0.input"], tensors["case0.loss.seg_maps"].long()
    ref = case_refs(tensors, 0)
    mode = loss_modes(meta["cases"][0])[-1]  # replay (Mask2Former) / official (MaskFormer): deterministic

    def parity_holds() -> bool:
        ours, out = run_case(model, x)
        diffs = rel_diffs(ours, ref)
        if any(d != 0 if ref[k].dtype == torch.uint8 else not d <= 1e-4 for k, d in diffs.items()):
            return False  # NaN counts as a failure
        weighted = losses_and_indices(model, out, labels, mode, tensors, 0)[1]
        return all(
            float(weighted[k]) == pytest.approx(v, rel=1e-5, abs=1e-7) for k, v in mode["weighted"].items()
        )

    assert parity_holds()
    state = model.state_dict(keep_vars=True)  # every official key, shared GroupNorm aliases included
    gen = torch.Generator().manual_seed(0)
    holding = []
    for key in keys:
        p = state[key]
        saved = p.detach().clone()
        with torch.no_grad():
            p.add_(0.5 * (saved.std(correction=0) + 0.1) * torch.randn(p.shape, generator=gen))
        if parity_holds():
            holding.append(key)
        with torch.no_grad():
            p.copy_(saved)
    return holding


def manifest_state_dict(entry: dict) -> dict[str, torch.Tensor]:
    """The manifest's keys as meta tensors (the standard relative_position_index, which is checked, as values);
    the keys of one ``shared_tensor_key_groups`` entry hold the same tensor, as in a real checkpoint."""
    window = entry["backbone"]["window_size"]
    sd = {
        k: relative_position_index(window)
        if k.endswith("relative_position_index")
        else torch.empty(shape, device="meta")
        for k, (shape, _) in entry["state_dict"].items()
    }
    for first, *others in entry.get("shared_tensor_key_groups", []):
        sd |= dict.fromkeys(others, sd[first])
    return sd


def assert_manifest_converts(
    entry: dict, sd: dict[str, torch.Tensor], convert: Converter, arch: str
) -> ModelConfig:
    """``sd`` (a full-size manifest's state dict) converts, loads strictly and matches the manifest's parameter
    counts, semantic layout and head; the registered preset ``arch`` has the same parameter count."""
    cfg, converted = convert({"model": sd, "iteration": 0})
    with torch.device("meta"):
        model = build_model(cfg)
    model.load_state_dict(converted, strict=True, assign=True)
    assert sum(p.numel() for p in model.parameters()) == entry["n_params"]
    for prefix, count in entry["n_params_by_top_module"].items():
        assert sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix)) == count
    assert cfg.semantic_attention == tuple(LAYOUT[t] for t in entry["semantic_layer_types"])
    assert cfg.sem_window_size == entry["backbone"]["sem_window_size"]
    head = entry["head"]
    assert (cfg.hidden_dim, cfg.num_queries, cfg.dim_feedforward, cfg.dec_layers) == (
        head["hidden_dim"],
        head["num_queries"],
        head["dim_feedforward"],
        head["dec_layers"],
    )
    with torch.device("meta"):  # the registered preset is the same network
        preset = semask.create_model(
            arch, num_classes=entry["num_classes"], sem_window_size=cfg.sem_window_size
        )
    assert sum(p.numel() for p in preset.parameters()) == entry["n_params"]
    return cfg
