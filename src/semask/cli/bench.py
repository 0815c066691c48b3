"""``semask bench MODEL --size H W [--batch B] [--amp none|bf16] [--impl fast|reference] [--output labels|logits]
[--compile] [--train] [--json]``.

Times whole-image inference (up to the class map as ``semask predict`` computes it, or the resized logits) or,
with ``--train``, a full training step on random data; reports median and min seconds per step, images/s and the
peak memory of the steps (growth of the RSS high-water mark over the RSS after building the model, the input and a
priming pass, on CPU; peak allocated on CUDA). Run one configuration per process: the RSS high-water mark cannot
be reset.
"""

import argparse
import json

from semask.hardware import AMPS
from semask.layers.impl import IMPLS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time inference or a training step: latency, images/s, peak memory")
    p.add_argument("model", help="architecture name (see `semask list`), run folder or checkpoint")
    p.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"), required=True, help="input size in pixels"
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--amp", choices=AMPS, default="none", help="autocast dtype")
    p.add_argument("--impl", choices=IMPLS, default="fast", help="attention implementation")
    p.add_argument(
        "--output",
        choices=["labels", "logits"],
        default="labels",
        help="inference up to the class map (as predict/eval) or the resized logits only",
    )
    p.add_argument("--train", action="store_true", help="time forward + loss + backward + AdamW step")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the model first (frozen weights for inference)"
    )
    p.add_argument("--num-classes", type=int, help="classes K of an architecture (default: its own)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--iters", type=int, default=10, help="timed steps")
    p.add_argument("--device", default="cpu", help="e.g. cpu, cuda, cuda:1")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from semask import hardware
    from semask.errors import ConfigError
    from semask.tools import benchmark
    from semask.tools.onednn import enable_onednn
    from semask.weights import load

    if args.iters < 1 or args.warmup < 0 or args.batch < 1:
        raise ConfigError("--iters and --batch must be >= 1 and --warmup >= 0")
    device = hardware.check_device(args.device)
    amp = hardware.resolve_amp(args.amp, device)
    torch.manual_seed(0)
    model = load(
        args.model, device, **({} if args.num_classes is None else {"num_classes": args.num_classes})
    )
    if not args.train:
        enable_onednn(model)  # the inference commands' fused CPU kernels (training runs plain modules)
    if args.compile:
        from semask.tools.compile import compile_model

        compile_model(model, freeze=not args.train)
    h, w = args.size
    images = torch.randn(args.batch, 3, h, w, device=device)
    # one untimed inference first maps the kernels' code and lazily built state into the process, so the RSS
    # growth measured below is (mostly) the tensors of the steps; 64x64 is enough (the mask models' GroupNorm
    # needs a 2x2 stride-32 map), except for a compiled model, which would otherwise compile twice
    prime = images[:1] if args.compile else images[:1, :, :64, :64]
    benchmark.inference_step(model, prime, args.impl, amp, args.output)()
    if args.train:
        labels = torch.randint(0, model.num_classes, (args.batch, h, w), device=device)
        step = benchmark.train_step(model, images, labels, args.impl, amp)
    else:
        step = benchmark.inference_step(model, images, args.impl, amp, args.output)
    benchmark.reset_peak_rss()
    rss_before = benchmark.current_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = benchmark.time_round_robin({"step": step}, args.warmup, args.iters, device)["step"]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = max(0.0, benchmark.peak_rss_mb() - rss_before)
    result = benchmark.summarize(times, args.batch, peak)
    setup = {"model": args.model, "size": [h, w], "batch": args.batch, "impl": args.impl, "amp": amp}
    setup |= {"compile": args.compile, "output": None if args.train else args.output}
    setup |= {"train": args.train, "device": str(device), "threads": torch.get_num_threads()}
    setup |= {"cpu": hardware.cpu_capability(), "amp_requested": args.amp}
    if args.json:
        print(json.dumps(setup | result))
    else:
        what = "training step" if args.train else f"inference ({args.output})"
        print(
            f"{args.model} {what} {args.batch}x3x{h}x{w}  impl={args.impl} amp={amp} "
            f"compile={args.compile} on {device} (CPU {setup['cpu']})"
        )
        print(
            f"median {result['median_s'] * 1e3:.1f} ms  min {result['min_s'] * 1e3:.1f} ms  "
            f"{result['images_per_s']:.2f} images/s  peak memory {peak:.0f} MiB"
        )
    return 0
