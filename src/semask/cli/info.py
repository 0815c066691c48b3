"""``semask info MODEL_OR_PATH --size H W``: parameters and the two FLOP counts of an architecture or weight file.

Nothing is materialised: the network is built on the meta device and run on a (1, 3, H, W) shape-only input.
"""

import argparse
from pathlib import Path

import torch

from semask.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters and FLOPs of an architecture or a semask weight file")
    p.add_argument(
        "model", help="architecture name (see `semask list`) or a .safetensors file with its .json"
    )
    p.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"), default=(512, 512), help="input size in pixels"
    )
    p.add_argument("--num-classes", type=int, help="head classes (default: the architecture's or the file's)")
    p.set_defaults(func=run)


def _build_meta(name: str, num_classes: int | None) -> torch.nn.Module:
    from semask.registry import create_model, list_models
    from semask.weights import read_sidecar

    overrides = {} if num_classes is None else {"num_classes": num_classes}
    with torch.device("meta"):
        if name in list_models():
            return create_model(name, **overrides)
        if Path(name).suffix == ".safetensors":
            config = read_sidecar(name)[0] | overrides
            return create_model(config["arch"], **config)
    raise ConfigError(
        f"{name!r} is neither a registered architecture (see `semask list`) nor a .safetensors file"
    )


def run(args: argparse.Namespace) -> int:
    from semask.tools.flops import mmcv_flops, torch_flops

    model = _build_meta(args.model, args.num_classes)
    size = tuple(args.size)
    params = sum(p.numel() for p in model.parameters())
    print(f"model:  {args.model}  input 1x3x{size[0]}x{size[1]}")
    print(f"params: {params / 1e6:.2f} M")
    print(f"mmcv-style (mmseg tools/get_flops.py, module hooks): {mmcv_flops(model, size) / 1e9:.2f} GMac")
    print(f"torch FlopCounterMode (all matmul/conv ops):         {torch_flops(model, size) / 1e9:.2f} GFLOP")
    return 0
