"""Winograd F(4x4, 3x3) vs PyTorch's direct convolution (oneDNN on CPU): forward + backward of one 3x3 conv, and
the forward alone without autograd (inference).

    python benchmarks/bench_winograd.py [--threads 2] [--reps 6]

Shapes: the stride-4/8/16 3x3 convolutions of the MaskFormer / Mask2Former pixel decoders (256 channels) at 384x384
and 512x512 crops, batch 2, channels-last as they run there. Prints a table with the CPU capability; the process
keeps freed memory as the semask commands do (:func:`semask.hardware.keep_freed_memory`).
"""

import argparse
import time

import torch
import torch.nn.functional as F

from semask import hardware
from semask.layers.winograd import _inference, _Winograd

SHAPES = [(256, 256, 24), (256, 256, 32), (256, 256, 48), (256, 256, 96), (256, 256, 128), (128, 128, 96)]


def timed(fn, reps: int) -> float:
    """Median milliseconds of ``fn()`` over ``reps`` calls after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def row(c: int, co: int, s: int, reps: int) -> str:
    """One table row: ``c -> co`` channels on an s x s map."""
    x = torch.randn(2, c, s, s).to(memory_format=torch.channels_last).requires_grad_()
    w = (torch.randn(co, c, 3, 3) * (2 / (9 * c)) ** 0.5).requires_grad_()
    grad = torch.randn(2, co, s, s).to(memory_format=torch.channels_last)
    direct = timed(lambda: F.conv2d(x, w, padding=1).backward(grad), reps)
    wino = timed(lambda: _Winograd.apply(x, w).backward(grad), reps)
    with torch.no_grad():
        direct_inf = timed(lambda: F.conv2d(x, w, padding=1), reps)
        wino_inf = timed(lambda: _inference(x, w), reps)
    with torch.no_grad():
        ref = F.conv2d(x.double(), w.double(), padding=1)
        errors = [
            (y.double() - ref).abs().max() / ref.abs().max()
            for y in (_inference(x, w), F.conv2d(x, w, padding=1))
        ]
    return (
        f"| {c} -> {co} | {s}x{s} | {direct:.1f} / {wino:.1f} ({direct / wino:.2f}x) "
        f"| {direct_inf:.1f} / {wino_inf:.1f} ({direct_inf / wino_inf:.2f}x) | {errors[0]:.1e} ({errors[1]:.1e}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--reps", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hardware.keep_freed_memory()
    print(
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads, float32, batch 2"
    )
    print(
        "\n| C_in -> C_out | map | forward + backward: direct / Winograd ms | inference: direct / Winograd ms "
        "| max rel. error (direct) |"
    )
    print("|" + "---|" * 5)
    for c, co, s in SHAPES:
        print(row(c, co, s, args.reps))


if __name__ == "__main__":
    main()
