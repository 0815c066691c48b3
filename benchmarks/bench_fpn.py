"""SeMask-FPN speed and memory table: ``reference`` vs ``fast`` attention, fp32 vs bf16 autocast, onnxruntime.

Run on a quiet machine (nothing else computing), from the repository root:

    python benchmarks/bench_fpn.py [--threads N] [--reps 10] [--warmup 2] [--json results.json] \
        [--checkpoint runs/camvid_semask --data-root data/camvid]
    python benchmarks/bench_fpn.py --quick   # seconds-long smoke check (tiny model and sizes)
    python benchmarks/bench_fpn.py --compile ...   # also torch.compile'd variants (compiling takes minutes)

Latencies come from ONE process, with the variants interleaved round-robin over the repetitions (so drift hits all
alike); each variant's ratio is its median over the reference fp32 median. Peak memory is the RSS growth of a fresh
``semask bench`` process per (variant, size) (the RSS high-water mark cannot be reset within a process). Sizes are
written W x H. Tables:

1. whole-image inference, SeMask-T FPN: 512x512 with K=150 and 768x768 with K=19; variants reference fp32, fast
   fp32, fast bf16 (with ``--compile`` also both compiled, weights frozen), onnxruntime fp32 (the ONNX export, see
   ``semask export``); each up to the class map, as ``semask predict`` and ``semask eval`` compute it (``labels``:
   the reference resizes the logits, takes the softmax and the argmax like the official ``simple_test``;
   onnxruntime's logits get a numpy argmax), and up to the resized logits only (``logits``), all interleaved;
2. training step (forward, loss, backward, AdamW), batch 2, 512x512, K=150: reference fp32 vs fast bf16 (and fast
   bf16 compiled);
3. peak memory of inference at 1024x512, 2048x1024, 4096x2048 (K=150, stages 2-3 global) per implementation and
   output;
4. with ``--checkpoint`` and ``--data-root`` (CamVid): identical argmax pixels of fast bf16 vs fast fp32 on val.
"""

import argparse
import copy
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

import semask
from semask import hardware
from semask.tools.benchmark import (
    OUTPUTS,
    Step,
    bench_subprocess,
    inference_step,
    summarize,
    time_round_robin,
    train_step,
)
from semask.tools.compile import compile_model
from semask.tools.onednn import enable_onednn

# name -> (attention impl, autocast, torch.compile)
VARIANTS = {
    "reference fp32": ("reference", "none", False),
    "fast fp32": ("fast", "none", False),
    "fast bf16": ("fast", "bf16", False),
    "fast fp32 compiled": ("fast", "none", True),
    "fast bf16 compiled": ("fast", "bf16", True),
}
TRAIN_VARIANTS = {
    "reference fp32": ("reference", "none", False),
    "fast fp32": ("fast", "none", False),
    "fast bf16": ("fast", "bf16", False),
    "fast bf16 compiled": ("fast", "bf16", True),
}
TARGETS = {"fast fp32": 0.70, "fast bf16": 0.45}
TRAIN_TARGET = 0.80


def selected(variants: dict, args: argparse.Namespace) -> dict:
    """The variants to run: without ``--compile`` the compiled ones are left out (each compiles for minutes), and
    the bf16 ones where the CPU has no native bf16 (they would run fp32: :mod:`semask.hardware`)."""
    bf16 = hardware.native_bf16()
    return {n: v for n, v in variants.items() if (args.compile or not v[2]) and (bf16 or v[1] != "bf16")}


def variant_model(model: torch.nn.Module, compiled: bool, train: bool) -> torch.nn.Module:
    """A private copy of ``model``, compiled (frozen weights for inference) when asked."""
    model = copy.deepcopy(model)
    return compile_model(model, freeze=not train) if compiled else model


def onnxruntime_steps(model: torch.nn.Module, images: torch.Tensor, folder: Path) -> dict[str, Step]:
    """Export ``model`` and return output -> step running it in onnxruntime (empty when onnx tools are missing)."""
    try:
        import onnxruntime as ort

        from semask.tools.export import export_onnx
    except ImportError:
        return {}
    path = export_onnx(model, folder / "model.onnx", size=tuple(images.shape[-2:]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"images": images.numpy()}
    return {"labels": lambda: session.run(None, feed)[0].argmax(1), "logits": lambda: session.run(None, feed)}


def peak_mb(
    arch: str, size: tuple[int, int], num_classes: int, impl: str, amp: str, batch: int, output: str | None
) -> float | str:
    """Peak memory (MiB) of one step of a variant, measured by ``semask bench`` in a fresh process
    (``output=None``: a training step)."""
    args = [arch, "--size", *map(str, size), "--num-classes", str(num_classes), "--impl", impl, "--amp", amp]
    args += ["--batch", str(batch), "--iters", "1", "--warmup", "0"]
    args += ["--train"] if output is None else ["--output", output]
    result = bench_subprocess(args)
    return result.get("peak_mem_mb", result.get("error"))


def with_ratios(times: dict[str, list[float]], batch: int, memory: dict[str, object]) -> list[dict]:
    base = summarize(times["reference fp32"], batch)["median_s"]
    rows = []
    for name, t in times.items():
        row = {"variant": name} | summarize(t, batch, memory.get(name))
        rows.append(row | {"ratio": row["median_s"] / base})
    return rows


def inference_tables(
    arch: str, num_classes: int, size: tuple[int, int], args: argparse.Namespace
) -> dict[str, list[dict]]:
    """output -> table rows; the steps of both outputs run interleaved in one round robin."""
    torch.manual_seed(0)
    model = semask.create_model(arch, num_classes=num_classes).eval()
    enable_onednn(model)  # as the inference commands do (the kernels run only under the fast implementation)
    images = torch.randn(1, 3, *size)
    variants = selected(VARIANTS, args)
    copies = {n: variant_model(model, c, False) for n, (i, a, c) in variants.items()}
    steps = {
        (n, out): inference_step(copies[n], images, i, a, out)
        for n, (i, a, c) in variants.items()
        for out in OUTPUTS
    }
    with tempfile.TemporaryDirectory() as folder:
        steps |= {
            ("onnxruntime fp32", out): s for out, s in onnxruntime_steps(model, images, Path(folder)).items()
        }
        times = time_round_robin(steps, args.warmup, args.reps)
    tables = {}
    for out in OUTPUTS:
        memory = {
            n: peak_mb(arch, size, num_classes, i, a, 1, out) for n, (i, a, c) in variants.items() if not c
        }
        tables[out] = with_ratios({n: t for (n, o), t in times.items() if o == out}, 1, memory)
    return tables


def train_table(arch: str, size: tuple[int, int], batch: int, args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(0)
    model = semask.create_model(arch, num_classes=150)
    images, labels = torch.randn(batch, 3, *size), torch.randint(0, 150, (batch, *size))
    variants = selected(TRAIN_VARIANTS, args)
    steps = {
        n: train_step(variant_model(model, c, True), images, labels, i, a)
        for n, (i, a, c) in variants.items()
    }
    times = time_round_robin(steps, args.warmup, args.reps)
    memory = {n: peak_mb(arch, size, 150, i, a, batch, None) for n, (i, a, c) in variants.items() if not c}
    return with_ratios(times, batch, memory)


def fits_in_memory(size: tuple[int, int], impl: str) -> bool:
    """False when the reference's quadratic global attention (2 x N^2 fp32, N = stride-16 tokens) would need
    more than 70% of the available RAM (it would be killed, or push other processes out)."""
    if impl != "reference":
        return True
    n = ((size[0] + 15) // 16) * ((size[1] + 15) // 16)
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    return 2 * n * n * 4 < 0.7 * available


def label(size: tuple[int, int]) -> str:
    """(H, W) -> "WxH", the usual way to write image sizes."""
    return f"{size[1]}x{size[0]}"


def memory_table(arch: str, sizes: list[tuple[int, int]]) -> list[dict]:
    rows = []
    for impl in ("fast", "reference"):
        for output in OUTPUTS:
            for size in sizes:
                fits = fits_in_memory(size, impl)
                mb = peak_mb(arch, size, 150, impl, "none", 1, output) if fits else "skipped"
                rows.append({"impl": impl, "output": output, "size": label(size), "peak_mem_mb": mb})
    return rows


def camvid_agreement(checkpoint: str, data_root: str, limit: int | None) -> dict:
    """Percentage of val pixels whose argmax is identical between fast bf16 and fast fp32 (run's eval settings)."""
    from semask.configs import ExperimentCfg
    from semask.data.datasets import build_dataset
    from semask.engine.inference import normalize_image, predict_labels

    model, info = semask.load(checkpoint, with_info=True)
    enable_onednn(model)
    cfg = ExperimentCfg.from_dict(info["experiment"]) if info.get("experiment") else ExperimentCfg()
    infer = replace(cfg.eval.single_scale(), amp="none")
    data = build_dataset("camvid", data_root, "val")
    count = len(data) if limit is None else min(limit, len(data))
    same = total = 0
    with semask.use_impl("fast"):
        for i in range(count):
            x = normalize_image(data.load(i)["image"])
            fp32 = predict_labels(model, x, infer)  # (1, H, W)
            bf16 = predict_labels(model, x, replace(infer, amp="bf16"))
            same += int((fp32 == bf16).sum())
            total += fp32.numel()
    return {"images": count, "identical_argmax_pct": 100.0 * same / total}


def fmt_mb(value: object) -> str:
    """A peak-memory cell: MiB, ``n/a`` (not measured) or the failure message."""
    return f"{value:.0f}" if isinstance(value, float) else "n/a" if value is None else str(value)


def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(
        f"  {'variant':18s} {'median ms':>10s} {'min ms':>9s} {'images/s':>9s} {'peak MiB':>9s} {'ratio':>6s}"
    )
    for r in rows:
        print(
            f"  {r['variant']:18s} {r['median_s'] * 1e3:10.1f} {r['min_s'] * 1e3:9.1f} "
            f"{r['images_per_s']:9.2f} {fmt_mb(r['peak_mem_mb']):>9s} {r['ratio']:6.2f}"
        )


def print_memory(rows: list[dict], sizes: list[tuple[int, int]]) -> None:
    print("\nPeak memory of whole-image inference (RSS growth, MiB), K=150, stages 2-3 global")
    for r in rows:
        print(f"  {r['impl']:10s} {r['output']:7s} {r['size']:>10s} {fmt_mb(r['peak_mem_mb']):>10s}")
    peak = {(r["impl"], r["output"], r["size"]): r["peak_mem_mb"] for r in rows}
    scale = (sizes[-1][0] * sizes[-1][1]) / (sizes[0][0] * sizes[0][1])
    for impl in ("fast", "reference"):
        for output in OUTPUTS:
            small, large = peak[impl, output, label(sizes[0])], peak[impl, output, label(sizes[-1])]
            if isinstance(small, float) and isinstance(large, float) and small > 0:
                verdict = "linear" if large <= 1.3 * scale * small else "NOT linear"
                print(
                    f"  {impl} {output}: largest/smallest = {large / small:.1f} for {scale:.0f}x pixels "
                    f"(target <= {1.3 * scale:.1f}): {verdict}"
                )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, help="torch/onnxruntime threads (default: torch's)")
    p.add_argument("--reps", type=int, default=10, help="timed rounds over all variants")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per variant first")
    p.add_argument("--checkpoint", help="CamVid run folder or checkpoint for the bf16 argmax agreement")
    p.add_argument("--data-root", help="CamVid root (SegNet layout) for --checkpoint")
    p.add_argument("--json", help="also write all results to this JSON file")
    p.add_argument("--quick", action="store_true", help="tiny model and sizes, 2 rounds: a smoke check")
    p.add_argument(
        "--compile", action="store_true", help="add torch.compile variants (minutes of compiling per size)"
    )
    args = p.parse_args()
    hardware.keep_freed_memory()  # as the semask commands
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the memory subprocesses
    arch = "semask_swin_test_fpn" if args.quick else "semask_swin_tiny_fpn"
    s = 8 if args.quick else 1  # sizes are divided by s
    if args.quick:
        args.reps, args.warmup = 2, 1
    cpu = hardware.cpu_capability()
    print(
        f"{arch}, torch {torch.__version__}, CPU {cpu}, {torch.get_num_threads()} threads, {args.reps} rounds"
    )
    if not hardware.native_bf16():
        print("  no native bf16 on this CPU: bf16 variants left out")
    s512, s768 = (512 // s, 512 // s), (768 // s, 768 // s)
    results: dict = {"setup": {"cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads()}}
    for num_classes, size in ((150, s512), (19, s768)):
        for output, rows in inference_tables(arch, num_classes, size, args).items():
            results[f"inference {label(size)} K={num_classes} {output}"] = rows
    results[f"training step batch 2 {label(s512)} K=150"] = train_table(arch, s512, 2, args)
    for title, rows in results.items():
        if title != "setup":
            print_rows(title, rows)
    print(
        f"  targets: fast fp32 <= {TARGETS['fast fp32']}, fast bf16 <= {TARGETS['fast bf16']} (inference); "
        f"training fast bf16 <= {TRAIN_TARGET}"
    )
    sizes = [(512 // s, 1024 // s), (1024 // s, 2048 // s), (2048 // s, 4096 // s)]  # (H, W)
    results["memory"] = memory_table(arch, sizes)
    print_memory(results["memory"], sizes)
    if args.checkpoint and args.data_root and hardware.native_bf16():
        results["camvid bf16 vs fp32"] = agree = camvid_agreement(
            args.checkpoint, args.data_root, 2 if args.quick else None
        )
        print(
            f"\nCamVid val, fast bf16 vs fp32: {agree['identical_argmax_pct']:.3f}% identical argmax pixels "
            f"over {agree['images']} images (target >= 99.5%)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
