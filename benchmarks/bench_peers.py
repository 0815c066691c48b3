"""semask vs Hugging Face ``transformers`` on the same weights: Mask2Former-Swin-T, MaskFormer-Swin-T, SegFormer-B0.

Run from the repository root on a quiet machine (``pip install transformers``; nothing is downloaded: the
transformers models are built from their configs with random weights, converted with ``semask.convert.hf``):

    python benchmarks/bench_peers.py [--threads N] [--reps 10] [--warmup 2] [--json peers.json]
    python benchmarks/bench_peers.py --quick   # fewer repetitions, smaller images (a few minutes on 2 cores)
    python benchmarks/bench_peers.py --quick --tasks inference --dtypes fp32 --no-memory   # the shortest run

For each model, first the outputs of both libraries are asserted equal (eval mode, the benchmark's input; class
and mask logits, or SegFormer logits, within ``--atol``). Then, interleaved round-robin in one process (drift hits
both alike): whole-image inference forward passes at 512x512, batch 1 and 8 (``torch.inference_mode``; each
library asked for the final prediction only: transformers without auxiliary outputs, semask with ``priors=False,
aux=False`` as its ``predict``), and a training step (forward, the library's own training loss on the same random
label maps, backward) at 384x384, batch 2; semask as its inference commands run it (oneDNN module swap),
transformers' MaskFormer with its auxiliary losses in training steps (deep supervision, as semask); fp32, and bf16
autocast too where the CPU has native bf16 (:func:`semask.hardware.native_bf16`). Peak memory (fp32): the RSS
growth of the first step in a fresh process, after building the models and inputs (Linux high-water mark). Both
libraries run in processes where glibc keeps freed memory, as in the semask commands
(:func:`semask.hardware.keep_freed_memory`; without it the step times depend on the heap's history, +-20%;
``--default-malloc`` leaves glibc's defaults, as a plain transformers script runs). The table shows median seconds
per step and the speed ratio transformers / semask (> 1: semask is faster).

SegFormer: transformers' LayerNorms use eps 1e-5 where the official model uses 1e-6 in the blocks; for the equal
outputs the semask copy takes transformers' eps (no effect on speed).
"""

import argparse
import json
import multiprocessing
import platform
import statistics
from concurrent.futures import ProcessPoolExecutor

import torch
import transformers

from semask import hardware
from semask.convert.hf import from_hf
from semask.engine.train import total_loss
from semask.models import build_model
from semask.tools.benchmark import current_rss_mb, peak_rss_mb, reset_peak_rss, time_round_robin
from semask.tools.onednn import enable_onednn

SWIN_T = dict(model_type="swin", out_features=["stage1", "stage2", "stage3", "stage4"], drop_path_rate=0.3)
MODELS = {
    "Mask2Former-Swin-T": (
        "Mask2FormerConfig",
        "Mask2FormerForUniversalSegmentation",
        dict(backbone_config=SWIN_T, num_labels=150),
    ),
    "MaskFormer-Swin-T": (
        "MaskFormerConfig",
        "MaskFormerForInstanceSegmentation",
        dict(backbone_config=SWIN_T, num_labels=150),
    ),
    "SegFormer-B0": ("SegformerConfig", "SegformerForSemanticSegmentation", dict(num_labels=150)),
}


def build_pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformers model (random init) and the semask model holding the same weights, ready for inference as
    semask's commands run it."""
    config_cls, model_cls, config = MODELS[name]
    hf = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**config))
    cfg, sd = from_hf(hf.state_dict(), hf.config.to_dict())
    ours = build_model(cfg)
    ours.load_state_dict(sd)
    enable_onednn(ours)  # as `semask predict/eval/bench`: fused CPU inference kernels (training is unchanged)
    if name.startswith("SegFormer"):
        for m in ours.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.eps = 1e-5
    return hf, ours


def deep_supervision(hf, on: bool) -> dict:
    """transformers' MaskFormer computes the losses of every decoder layer (as the official MaskFormer and semask)
    only with ``use_auxiliary_loss`` and the decoder's hidden states, and then predicts the masks of every layer
    at inference too: on for training steps, off for inference. Returns the extra forward arguments."""
    if not isinstance(hf, transformers.MaskFormerForInstanceSegmentation):
        return {}
    hf.config.use_auxiliary_loss = on
    return {"output_hidden_states": on}


def forward_steps(hf, ours, images: torch.Tensor, amp: bool) -> dict:
    """Inference forward passes (eval mode, inference_mode, optional bf16 autocast) of both libraries, each asked
    for the final prediction only (transformers without auxiliary outputs, semask ``priors=False, aux=False`` as
    in its ``predict``)."""
    deep_supervision(hf, False)
    hf.eval()
    ours.eval()

    def run(fn):
        def step():
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=amp):
                return fn()

        return step

    return {
        "transformers": run(lambda: hf(pixel_values=images)),
        "semask": run(lambda: ours(images, priors=False, aux=False)),
    }


def assert_equal_outputs(hf, ours, images: torch.Tensor, atol: float) -> float:
    """Max abs difference of the outputs (class + mask logits, or logits); raises AssertionError above atol."""
    steps = forward_steps(hf, ours, images, amp=False)
    theirs, out = steps["transformers"](), steps["semask"]()
    if hasattr(out, "pred_logits"):
        diff = max(
            (out.pred_logits - theirs.class_queries_logits).abs().max().item(),
            (out.pred_masks - theirs.masks_queries_logits).abs().max().item(),
        )
    else:
        diff = (out.logits - theirs.logits).abs().max().item()
    assert diff <= atol, f"outputs differ by {diff:.2e} > {atol:.0e}"
    return diff


def random_labels(batch: int, size: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    """(B, H, W) label maps of 16x16-pixel blocks of 4 classes per image (none void)."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.stack([torch.randperm(num_classes, generator=g)[:4] for _ in range(batch)])  # (B, 4)
    blocks = torch.randint(0, 4, (batch, size // 16, size // 16), generator=g)
    labels = torch.gather(classes, 1, blocks.flatten(1)).view_as(blocks)
    return labels.repeat_interleave(16, 1).repeat_interleave(16, 2)


def train_steps(hf, ours, images: torch.Tensor, labels: torch.Tensor, amp: bool) -> dict:
    """Training steps (forward, each library's loss, backward) on the same images and label maps."""
    hf.train()
    ours.train()
    if hasattr(ours.decoder, "predictor"):
        masks = [torch.stack([lab == c for c in lab.unique()]).float() for lab in labels]
        hf_kwargs = dict(mask_labels=masks, class_labels=[lab.unique() for lab in labels])
        hf_kwargs |= deep_supervision(hf, True)
    else:
        hf_kwargs = dict(labels=labels)

    def hf_step():
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            loss = hf(pixel_values=images, **hf_kwargs).loss
        hf.zero_grad(set_to_none=True)
        loss.backward()

    def our_step():
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            out = ours(images)
        loss = total_loss(ours.losses(out, labels))
        ours.zero_grad(set_to_none=True)
        loss.backward()

    return {"transformers": hf_step, "semask": our_step}


def _steps(hf, ours, task: str, size: int, batch: int, amp: bool) -> dict:
    images = torch.randn(batch, 3, size, size)
    if task == "train":
        return train_steps(hf, ours, images, random_labels(batch, size, 150), amp)
    return forward_steps(hf, ours, images, amp)


def _child_peak_mb(
    name: str, lib: str, task: str, size: int, batch: int, amp: bool, threads: int, keep_freed: bool
) -> float:
    if keep_freed:
        hardware.keep_freed_memory()
    torch.set_num_threads(threads)
    step = _steps(*build_pair(name), task, size, batch, amp)[lib]
    base = current_rss_mb()
    reset_peak_rss()
    step()
    return peak_rss_mb() - base


def peak_memory(
    name: str, task: str, size: int, batch: int, amp: bool, threads: int, keep_freed: bool
) -> dict[str, float]:
    """Per library: the RSS growth (MiB) of the first step in a fresh process (models and inputs built first)."""
    out = {}
    for lib in ("transformers", "semask"):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            out[lib] = pool.submit(
                _child_peak_mb, name, lib, task, size, batch, amp, threads, keep_freed
            ).result()
    return out


def measure(steps: dict, warmup: int, reps: int, peak: dict[str, float] | None) -> dict:
    times = time_round_robin(steps, warmup, reps)
    return {
        lib: {
            "median_s": statistics.median(t),
            "min_s": min(t),
            "peak_mb": None if peak is None else peak[lib],
        }
        for lib, t in times.items()
    }


def print_table(rows: list[dict]) -> None:
    """Markdown table: median seconds per step, speed ratio transformers / semask, peak memory (fp32)."""
    print(
        "\n| model | task | dtype | transformers s | semask s | speed ratio | peak MiB transformers / semask |"
    )
    print("|" + "---|" * 7)
    for r in rows:
        hf_s, our_s = r["transformers"]["median_s"], r["semask"]["median_s"]
        peak = (r["transformers"]["peak_mb"], r["semask"]["peak_mb"])
        memory = "-" if peak[0] is None else f"{peak[0]:.0f} / {peak[1]:.0f}"
        print(
            f"| {r['model']} | {r['task']} | {r['dtype']} | {hf_s:.3f} | {our_s:.3f} | {hf_s / our_s:.2f}x | {memory} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--atol", type=float, default=1e-3, help="equal-output tolerance (random full-size weights)"
    )
    p.add_argument("--quick", action="store_true", help="3 reps, 1 warmup, 256x256 images, batch 1 and 2")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--tasks", nargs="+", default=["inference", "train"], choices=["inference", "train"])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak-memory measurements")
    p.add_argument("--json", default="bench_peers.json", help="written after every measured row")
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's allocator as it is (as in a plain transformers script) instead of keeping freed memory",
    )
    args = p.parse_args()
    keeps_freed = not args.default_malloc and hardware.keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size, train_size, batches = (256, 256, (1, 2)) if args.quick else (512, 384, (1, 8))
    reps, warmup = (3, 1) if args.quick else (args.reps, args.warmup)
    dtypes = [d for d in args.dtypes if d == "fp32" or hardware.native_bf16()]
    env = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": hardware.native_bf16(),
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "quick": args.quick,
        "malloc_keeps_freed_memory": keeps_freed,
    }
    with open("/proc/cpuinfo") as f:
        env["cpu"] = next(
            (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), env["cpu"]
        )
    print(json.dumps(env))
    pairs, diffs = {}, {}
    for name in args.models:
        pairs[name] = build_pair(name)
        diffs[name] = assert_equal_outputs(*pairs[name], torch.randn(1, 3, size, size), args.atol)
        print(f"{name}: outputs equal (max abs diff {diffs[name]:.1e})", flush=True)
    tasks = [("inference", size, batches[0]), ("train", train_size, 2), ("inference", size, batches[1])]
    rows = []
    for dtype in dtypes:
        for task, px, batch in [t for t in tasks if t[0] in args.tasks]:
            for name, (hf, ours) in pairs.items():
                amp = dtype == "bf16"
                memory = not (amp or args.no_memory)
                peak = peak_memory(name, task, px, batch, amp, args.threads, keeps_freed) if memory else None
                label = f"{'train step' if task == 'train' else task} {px}x{px} b{batch}"
                row = {"model": name, "task": label, "dtype": dtype, "max_abs_diff": diffs[name]}
                rows.append(row | measure(_steps(hf, ours, task, px, batch, amp), warmup, reps, peak))
                print(rows[-1], flush=True)
                with open(args.json, "w") as f:
                    json.dump({"env": env, "rows": rows}, f, indent=2)
    print_table(rows)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
