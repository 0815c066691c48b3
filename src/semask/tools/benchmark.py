"""Latency and peak-memory measurement shared by ``semask bench`` and ``benchmarks/bench_fpn.py``.

A *step* is a zero-argument callable doing one unit of work (an inference pass or a training step); the timers
run steps and return wall-clock seconds. Peak memory is process-wide (RSS high-water mark on CPU), so each
measurement of it runs in a fresh process: :func:`bench_subprocess` runs ``semask bench --json`` in one.
"""

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Hashable

import torch
from torch import nn

from semask.engine.inference import InferenceCfg, autocast, predict_labels
from semask.engine.train import total_loss
from semask.layers.impl import use_impl

Step = Callable[[], object]
OUTPUTS = ("labels", "logits")


def inference_step(
    model: nn.Module, images: torch.Tensor, impl: str, amp: str, output: str = "labels"
) -> Step:
    """Whole-image inference at the input size.

    Args:
        model: a :class:`~semask.models.segmenter.Segmenter` (put in eval mode here).
        images: (B, 3, H, W) normalised images on the model's device.
        impl: ``"fast"`` or ``"reference"`` (see :mod:`semask.layers.impl`).
        amp: ``"none"``, ``"bf16"`` or ``"fp16"``.
        output: ``"labels"``: the (B, H, W) class map, as ``semask predict`` and ``semask eval`` compute it
            (:func:`semask.engine.inference.predict_labels`; ``reference`` resizes, takes the softmax and the
            argmax like the official ``simple_test``); ``"logits"``: the (B, K, H, W) resized logits only.

    Returns:
        A step returning the labels or the logits.

    Raises:
        ValueError: unknown ``output``.
    """
    if output not in OUTPUTS:
        raise ValueError(f"unknown inference output {output!r}; choose from {OUTPUTS}")
    model.eval()
    cfg = InferenceCfg(amp=amp)

    def step() -> torch.Tensor:
        with use_impl(impl), torch.inference_mode():
            if output == "labels":
                return predict_labels(model, images, cfg)
            with autocast(images.device, amp):
                return model.predict(images)

    return step


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, impl: str, amp: str) -> Step:
    """One full training step: forward, the training loss (``model.losses`` with the default settings), backward,
    AdamW update.

    Args:
        model: a segmenter (put in train mode here; its weights change with every step).
        images: (B, 3, H, W) normalised images; labels: (B, H, W) int64 class indices.
        impl, amp: as in :func:`inference_step`.

    Returns:
        A step returning the total loss (a 0-dim tensor).
    """
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> torch.Tensor:
        with use_impl(impl):
            with autocast(images.device, amp):
                out = model(images)
            losses = model.losses(out, labels)
            loss = total_loss(losses)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return loss.detach()

    return step


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin(
    steps: dict[Hashable, Step], warmup: int, iters: int, device: torch.device | str = "cpu"
) -> dict[Hashable, list[float]]:
    """Time several steps interleaved, so machine drift (thermal, other load) hits them all alike.

    Each step first runs ``warmup`` times untimed; then ``iters`` rounds run every step once, in turn.

    Args:
        steps: name -> step.
        device: where the steps run (CUDA is synchronised around each timed call).

    Returns:
        name -> ``iters`` wall-clock times in seconds.
    """
    device = torch.device(device)
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[Hashable, list[float]] = {name: [] for name in steps}
    for _ in range(iters):
        for name, step in steps.items():
            _synchronize(device)
            start = time.perf_counter()
            step()
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith(f"{field}:"))
    return kib / 1024


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux ``VmRSS``)."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident set size of this process image, in MiB (Linux ``VmHWM``).

    Not ``getrusage().ru_maxrss``: that keeps the parent's peak across fork + exec, so a benchmark process started
    by a big parent would report the parent's RSS.
    """
    return _status_mb("VmHWM")


def reset_peak_rss() -> None:
    """Lower the peak RSS (``VmHWM``) to the current RSS (``/proc/self/clear_refs``, Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def summarize(times: list[float], batch: int, peak_mem_mb: float | None = None) -> dict[str, float | None]:
    """``median_s``, ``min_s`` (seconds per step), ``images_per_s`` (from the median) and ``peak_mem_mb``."""
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "images_per_s": batch / median,
        "peak_mem_mb": peak_mem_mb,
        "iters": len(times),
    }


def bench_subprocess(args: list[str], timeout_s: float | None = None) -> dict:
    """Run ``semask bench ARGS --json`` in a fresh Python process and return its JSON result.

    Args:
        args: command-line arguments after ``semask bench`` (e.g. ``["semask_swin_tiny_fpn", "--size", ...]``).
        timeout_s: give up after this many seconds.

    Returns:
        The parsed JSON object, or ``{"error": message}`` when the process failed (e.g. out of memory).
    """
    cmd = [sys.executable, "-m", "semask", "bench", *args, "--json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])
