"""The ``fast`` and ``reference`` attention implementations (semask.layers.impl) compute the same network.

Small, odd sizes only (memory scaling at large sizes is measured by ``benchmarks/bench_fpn.py``).
"""

import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import semask
from semask import hardware
from semask.cli import main
from semask.engine import inference
from semask.engine.inference import InferenceCfg, predict_labels, predict_probs, upsampled_argmax
from semask.layers import onednn, semantic_attention
from semask.layers import window_attention as swin
from semask.layers.impl import IMPLS, get_impl, set_impl, use_impl
from semask.layers.windows import from_windows, to_windows, window_index
from semask.losses.fpn import semask_fpn_loss
from semask.tools.onednn import enable_onednn


def _model(num_classes: int = 7, **overrides) -> torch.nn.Module:
    """Tiny SeMask with shifted Swin blocks and both semantic layer kinds; lambda = 0.5 so attention matters."""
    torch.manual_seed(0)
    kw = dict(depths=(2, 2, 2, 2), semantic_attention=("window", "global", "window", "global"))
    model = semask.create_model("semask_swin_test_fpn", num_classes=num_classes, **kw | overrides)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    return model


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.float() - ref.float()).abs().max() / max(1.0, float(ref.abs().max())))


def test_impl_selection():
    assert get_impl() == "fast"
    with use_impl("reference"):
        assert semask.get_impl() == "reference"
    with pytest.raises(RuntimeError), use_impl("reference"):
        raise RuntimeError
    assert get_impl() == "fast"
    semask.set_impl("reference")
    set_impl("fast")
    assert get_impl() == "fast"
    with pytest.raises(ValueError, match="unknown attention implementation"):
        set_impl("flash")


@pytest.mark.parametrize(("h", "w", "shift"), [(14, 21, 0), (13, 22, 3), (5, 3, 3), (9, 16, 0)])
def test_window_layouts_agree(h, w, shift):
    x = torch.randn(2, h * w, 4)
    with use_impl("reference"):
        ref = to_windows(x, h, w, 7, shift)
        back = from_windows(ref * 2, h, w, 7, shift)
    assert torch.equal(to_windows(x, h, w, 7, shift), ref)
    assert torch.equal(from_windows(ref * 2, h, w, 7, shift), back)
    assert torch.equal(back, x * 2)


def test_caches_serve_training_after_inference_mode():
    cpu = torch.device("cpu")
    window_index.cache_clear()
    swin.cached_shift_attention_mask.cache_clear()
    with torch.inference_mode():
        mask = swin.cached_shift_attention_mask(14, 21, 7, cpu, torch.float32)
        to_windows(torch.randn(1, 11 * 17, 4), 11, 17, 7, 3)  # caches the window index of an 11 x 17 map
    x = torch.randn(1, 11 * 17, 4, requires_grad=True)
    from_windows(to_windows(x, 11, 17, 7, 3), 11, 17, 7, 3).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert not mask.is_inference()
    assert swin.cached_shift_attention_mask(14, 21, 7, cpu, torch.float32) is mask
    assert torch.equal(mask, swin.shift_attention_mask(14, 21, 7, cpu, fill=swin.FAST_MASK_VALUE))
    assert torch.equal(mask != 0, swin.shift_attention_mask(14, 21, 7, cpu) != 0)  # the official regions
    assert swin.cached_shift_attention_mask(14, 21, 7, cpu, torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("grad", [False, True])
def test_fast_shift_mask_leaves_no_denormals(grad):
    """Windows whose unmasked tokens are zero-valued padding: the official -100 mask leaves exp(-100) weights on
    the other region and denormal outputs (x86 products on them run ~80x slower); fast's are exactly 0, and
    every output equals the official one to float32 precision."""
    torch.manual_seed(0)
    heads, n, d = 2, 49, 8
    mask = swin.shift_attention_mask(7, 7, 7, torch.device("cpu"))  # one window, the corner's 4 regions
    q, k, v = torch.randn(1, heads, n, d), torch.randn(1, heads, n, d), torch.randn(1, heads, n, d)
    region = mask[0, 0] == 0  # tokens of the first token's region: make them padding (v = 0)
    v[:, :, region] = 0
    bias = torch.zeros(heads, n, n, requires_grad=grad)
    out = {}
    for impl in IMPLS:
        with use_impl(impl), torch.set_grad_enabled(grad):
            out[impl] = swin.window_attention(
                q, k, v, bias, swin.shift_mask(7, 7, 7, q.device, q.dtype), d**-0.5
            )
    tiny = torch.finfo(torch.float32).tiny
    denormal = lambda t: ((t != 0) & (t.abs() < tiny)).any().item()  # noqa: E731
    assert denormal(out["reference"]) and not denormal(out["fast"])
    assert torch.allclose(out["fast"], out["reference"], rtol=1e-5, atol=1e-6)


def test_chunked_semantic_attention(monkeypatch):
    monkeypatch.setattr(semantic_attention, "_CHUNK_ELEMENTS", 200)  # 5 query rows per chunk, last one short
    q, k, v = torch.randn(2, 37, 6), torch.randn(2, 37, 6), torch.randn(2, 37, 10)
    with use_impl("reference"):
        ref = semantic_attention.semantic_attention(q, k, v)
    torch.testing.assert_close(semantic_attention.semantic_attention(q, k, v), ref)


@pytest.mark.parametrize("fused", [False, True], ids=["cpu-rule", "sdpa"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_fast_matches_reference(monkeypatch, train, fused):
    """Outputs and every parameter gradient, dropout and drop-path on in train mode (same seeds); with the CPU
    kernel rule and with SDPA forced everywhere (as on GPUs)."""
    monkeypatch.setattr(semantic_attention, "_CHUNK_ELEMENTS", 256)  # global layers in several query chunks
    if fused:
        monkeypatch.setattr(swin, "_sdpa_is_faster", lambda q, bias: True)
    model = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, label = torch.randn(2, 3, 61, 83), torch.randint(0, 7, (2, 61, 83))
    results = {}
    for impl in IMPLS:
        model.load_state_dict(state)  # BatchNorm running stats change in train mode
        model.train(train)
        model.zero_grad()
        torch.manual_seed(1)
        with use_impl(impl):
            out = model(x)
            losses = semask_fpn_loss(out.logits, out.prior_logits, label)
            (losses["loss_ce"] + losses["loss_cate"]).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results[impl] = (out.logits.detach(), out.prior_logits.detach(), grads)
    (logits, prior, grads), (ref_logits, ref_prior, ref_grads) = results["fast"], results["reference"]
    assert _rel(logits, ref_logits) <= 1e-4 and _rel(prior, ref_prior) <= 1e-4
    bad = {n: _rel(g, ref_grads[n]) for n, g in grads.items() if not _rel(g, ref_grads[n]) <= 1e-4}
    assert not bad


@pytest.mark.cpu_paths
@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.inference_mode])
def test_fast_inference_matches_reference(grad_mode):
    """Inference: oneDNN linear and conv with the BatchNorm folded, channels-last decoder, no prior decoder; same
    logits as the reference within 1e-4, and the reordered-weight cache follows in-place weight updates."""
    model = _model().eval()
    assert enable_onednn(model) > 0  # the opt-in swap: same parameters, fused kernels
    with torch.no_grad():  # BatchNorm statistics away from identity, so that a wrong folding shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t, lo, hi in (
                    (m.running_mean, -0.5, 0.5),
                    (m.running_var, 0.5, 2.0),
                    (m.weight, 0.5, 1.5),
                ):
                    t.uniform_(lo, hi)
    x = torch.randn(2, 3, 61, 83)

    def logits(impl: str) -> torch.Tensor:
        with grad_mode(), use_impl(impl):
            return model.predict_logits(x)

    ref = logits("reference")
    assert _rel(logits("fast"), ref) <= 1e-4
    fc1 = model.backbone.layers[0].blocks[0].mlp.fc1
    head = model.decode_head.scale_heads[0][0]
    ran = hardware.onednn_runs(torch.float32)  # oneDNN ran where it runs
    assert (fc1 in onednn._CACHE) == (head.conv in onednn._CACHE) == ran
    copy.deepcopy(model)  # the cached oneDNN weights (opaque, no storage) are not part of the model
    torch.save(model, io.BytesIO())
    for update in (lambda: fc1.weight.mul_(2), lambda: head.bn.running_mean.add_(1)):
        with torch.no_grad():
            update()  # in place: same storage, new version
        ref2 = logits("reference")
        assert _rel(ref2, ref) > 1e-3 and _rel(logits("fast"), ref2) <= 1e-4
        ref = ref2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("classes_per_chunk", [1, 3, 13])
def test_upsampled_argmax_equals_full_resize(dtype, classes_per_chunk):
    """Chunked resize + running max = argmax of the full resize, including the first-index rule on ties."""
    torch.manual_seed(0)
    size = (35, 41)
    chunk_bytes = classes_per_chunk * 2 * 35 * 41 * torch.finfo(dtype).bits // 8
    logits = torch.randn(2, 13, 11, 9, dtype=dtype).contiguous(memory_format=torch.channels_last)
    full = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    assert torch.equal(upsampled_argmax(logits, size, chunk_bytes), full.argmax(1))
    ties = torch.randint(0, 3, (2, 13, 35, 41)).to(dtype)  # same size: the values stay integers, many ties
    assert torch.equal(upsampled_argmax(ties, size, chunk_bytes), ties.argmax(1))


def test_predict_labels(monkeypatch):
    """fast: one whole-image pass never builds the full-resolution logits and gives their argmax; reference and
    TTA take the argmax of ``predict_probs``; fast and reference agree."""
    model = _model().eval()
    x = torch.randn(2, 3, 61, 83)
    with torch.no_grad(), use_impl("reference"):
        ref = predict_probs(model, x, InferenceCfg()).argmax(1)
        assert torch.equal(predict_labels(model, x, InferenceCfg()), ref)
    flip = InferenceCfg(flip=True)
    assert torch.equal(predict_labels(model, x, flip), predict_probs(model, x, flip).argmax(1))
    with torch.no_grad():
        full = model.predict_logits(x).argmax(1)
    monkeypatch.setattr(inference, "predict_probs", None)  # the fast single pass must not call it
    labels = predict_labels(model, x, InferenceCfg())
    assert torch.equal(labels, full)
    assert labels.shape == (2, 61, 83) and (labels != ref).float().mean() <= 1e-3


@pytest.mark.cpu_paths
@pytest.mark.parametrize("fused", [False, True], ids=["cpu-rule", "sdpa"])
def test_bf16_autocast_is_close(monkeypatch, fused):
    """bf16 autocast runs and stays near fp32, with the CPU kernel rule and with SDPA forced in bf16."""
    if fused:
        monkeypatch.setattr(swin, "_sdpa_is_faster", lambda q, bias: True)
    model = _model().eval()
    x = torch.randn(1, 3, 67, 75)
    with torch.no_grad():
        with use_impl("reference"):
            ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.logits.dtype == torch.bfloat16
    assert _rel(out.logits, ref.logits) <= 5e-2 and _rel(out.prior_logits, ref.prior_logits) <= 5e-2


@pytest.mark.parametrize("train", [False, True], ids=["inference", "train"])
def test_bench_cli_json(capsys, train):
    args = ["bench", "semask_swin_test_fpn", "--size", "40", "56", "--iters", "2", "--warmup", "0"]
    args += ["--num-classes", "3", "--batch", "2", "--json"] + (["--train", "--amp", "bf16"] if train else [])
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        result["iters"] == 2
        and result["train"] is train
        and result["output"] == (None if train else "labels")
    )
    assert result["median_s"] >= result["min_s"] > 0
    assert result["images_per_s"] == pytest.approx(2 / result["median_s"])
    assert result["peak_mem_mb"] >= 0


def test_compiled_fast_path_matches_reference():
    """torch.compile (inductor, frozen weights) of the fast path: one graph, same logits as the reference."""
    from semask.tools.compile import compile_model

    model = _model().eval()
    x = torch.randn(1, 3, 70, 90)  # pads to window multiples and shifts in every stage
    with torch.no_grad(), use_impl("reference"):
        ref = model.predict_logits(x)
    explanation = torch._dynamo.explain(model.predict_logits)(x)
    assert explanation.graph_break_count == 0
    compiled = compile_model(_model().eval(), freeze=True)
    with torch.no_grad(), use_impl("fast"):
        out = compiled.predict_logits(x)
    assert (out - ref).abs().max() <= 1e-4 * max(1.0, ref.abs().max())


@pytest.mark.slow
def test_benchmark_script_quick(tmp_path):
    """``benchmarks/bench_fpn.py --quick`` (about a minute) runs every table and writes them as JSON."""
    script = Path(__file__).parents[1] / "benchmarks" / "bench_fpn.py"
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(script), "--quick", "--json", str(out)], check=True, capture_output=True
    )
    results = json.loads(out.read_text())
    for output in ("labels", "logits"):
        rows = {r["variant"]: r for r in results[f"inference 64x64 K=150 {output}"]}
        assert rows["reference fp32"]["ratio"] == 1.0 and rows["fast fp32"]["median_s"] > 0
        assert ("fast bf16" in rows) == hardware.native_bf16()  # bf16 rows only where bf16 is native
    assert results["setup"]["cpu"] == hardware.cpu_capability()
    assert {(r["impl"], r["output"]) for r in results["memory"]} == {
        (i, o) for i in ("fast", "reference") for o in ("labels", "logits")
    }
    assert all(isinstance(r["peak_mem_mb"], float) for r in results["memory"])


@pytest.mark.cpu_paths
def test_fast_mask2former_inference_matches_reference():
    """Mask2Former inference in ``fast`` with the oneDNN swap: deformable attention as one embedding_bag, the
    encoder FFN's ReLU fused into oneDNN, NHWC mask products; class scores equal the reference within 1e-4."""
    torch.manual_seed(0)
    model = semask.create_model("semask_swin_test_m2f", num_classes=5).eval()
    assert enable_onednn(model) > 0
    x = torch.randn(1, 3, 96, 128)

    def scores(impl: str) -> torch.Tensor:
        with torch.inference_mode(), use_impl(impl):
            return model.predict_scores(x)

    assert _rel(scores("fast"), scores("reference")) <= 1e-4
    layer = model.sem_seg_head.pixel_decoder.transformer.encoder.layers[0]
    assert type(layer).__name__ == "OneDNNEncoderLayer"
    assert (layer.linear1 in onednn._CACHE) == hardware.onednn_runs(torch.float32)


@pytest.mark.cpu_paths
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("groups", [1, 8])
def test_fused_conv_equals_conv_then_activation(bias: bool, groups: int):
    """``onednn.fused_conv``: conv + exact GELU / ReLU in one call, equal to the modules (or None where oneDNN
    does not run, and under autograd)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1, groups=groups, bias=bias)
    x = torch.randn(2, 8, 9, 11).to(memory_format=torch.channels_last)
    with torch.no_grad():
        for activation, ref in (("gelu", F.gelu(conv(x))), ("relu", F.relu(conv(x)))):
            y = onednn.fused_conv(x, conv, activation)
            assert (y is None) != hardware.onednn_runs(torch.float32)
            if y is not None:
                torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    assert onednn.fused_conv(x, conv, "gelu") is None  # autograd records: the caller runs the modules


@pytest.mark.cpu_paths
@pytest.mark.parametrize("amp", [False, True])
def test_fast_segformer_inference_matches_reference(amp: bool):
    """SegFormer inference in ``fast`` with the oneDNN swap: MiT's exact GELU fused into the depthwise conv
    (``OneDNNMixFFN``); logits equal the reference within 1e-4 (fp32) or bf16 rounding (bf16 autocast)."""
    if amp and not hardware.native_bf16():
        pytest.skip("bf16 autocast is emulated on this CPU")
    torch.manual_seed(0)
    model = semask.create_model("segformer_mit_b0", num_classes=5).eval()
    assert enable_onednn(model) > 0
    x = torch.randn(1, 3, 64, 96)

    def logits(impl: str) -> torch.Tensor:
        with torch.inference_mode(), use_impl(impl), torch.autocast("cpu", torch.bfloat16, enabled=amp):
            return model.predict_logits(x).float()

    assert _rel(logits("fast"), logits("reference")) <= (2e-2 if amp else 1e-4)
    ffns = [m for m in model.modules() if type(m).__name__ == "OneDNNMixFFN"]
    assert len(ffns) == 8  # every MixFFN of MiT-B0 (depths 2, 2, 2, 2)
    dtype = torch.bfloat16 if amp else torch.float32
    assert (ffns[0].dwconv.dwconv in onednn._CACHE) == hardware.onednn_runs(dtype)


@pytest.mark.cpu_paths
@pytest.mark.parametrize("amp", [False, True])
def test_fast_segformer_head_trains_as_the_reference(amp: bool):
    """The SegFormer head fused per stage (``fast``: no 4E concat, in-place sums, BatchNorm on batch statistics in
    training; under bf16 autocast the resized maps summed by products) gives the reference head's logits and
    gradients within 1e-4 (fp32) or bf16 rounding."""
    if amp and not hardware.native_bf16():
        pytest.skip("bf16 autocast is emulated on this CPU")
    torch.manual_seed(0)
    model = semask.create_model("segformer_mit_b0", num_classes=5, drop_path_rate=0.0, dropout=0.0).train()
    x, label = torch.randn(2, 3, 64, 96), torch.randint(0, 5, (2, 64, 96))
    results = {}
    for impl in IMPLS:
        model.zero_grad()
        with use_impl(impl), torch.autocast("cpu", torch.bfloat16, enabled=amp):
            out = model(x)
            semask_fpn_loss(out.logits.float(), None, label)["loss_ce"].backward()
        results[impl] = (
            out.logits.detach().float(),
            {n: p.grad.clone() for n, p in model.named_parameters()},
        )
    (logits, grads), (ref_logits, ref_grads) = results["fast"], results["reference"]
    tol = 3e-2 if amp else 1e-4
    assert _rel(logits, ref_logits) <= tol
    assert not {n: _rel(g, ref_grads[n]) for n, g in grads.items() if not _rel(g, ref_grads[n]) <= tol}
