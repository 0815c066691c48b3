"""``semask info MODEL_OR_WEIGHTS --size H W``: what a model is: for weights (run folder, ``.pt``, ``.safetensors``,
``hf://ORG/REPO[@rev]``) the architecture, classes, source and the key report (how the file's tensors fit the
config); for both, the parameters and the two FLOP counts.

Nothing is materialised: the network is built on the meta device and run on a (1, 3, H, W) shape-only input.
"""

import argparse
from pathlib import Path
from typing import Any

import torch

from semask.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info", help="architecture, classes, source, key report, parameters and FLOPs of a model or weights"
    )
    p.add_argument(
        "model",
        help="architecture name (see `semask list`), run folder, .pt checkpoint, .safetensors file with its .json, "
        "or hf://ORG/REPO[@rev]",
    )
    p.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"), default=(512, 512), help="input size in pixels"
    )
    p.add_argument("--num-classes", type=int, help="head classes (default: the architecture's or the file's)")
    p.set_defaults(func=run)


def _build_meta(config: dict[str, Any]) -> torch.nn.Module:
    from semask.registry import create_model

    with torch.device("meta"):
        return create_model(config["arch"], **config)


def _read(spec: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(config, state dict, info) of the weights ``spec`` names (as :func:`semask.load` finds them)."""
    from semask.weights.load import read_weights, run_checkpoint

    if spec.startswith("hf://"):
        from semask.hub import download

        return read_weights(download(spec))
    path = Path(spec)
    if not path.exists():
        raise ConfigError(
            f"{spec!r} is neither a registered architecture (see `semask list`) nor weights (run folder, .pt, "
            ".safetensors, hf://ORG/REPO)"
        )
    return read_weights(run_checkpoint(path))


def _key_report(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> list[str]:
    """Lines of the key report: the tensors that fit the config, then each kind of misfit with its first keys."""
    from semask.weights.keys import compare_keys

    report = compare_keys(state_dict, {k: v.shape for k, v in model.state_dict().items()})
    lines = [f"keys: {len(state_dict)} tensors in the file, {len(model.state_dict())} in the model"]
    for label, keys in (
        ("unmapped file keys", report.unmapped),
        ("missing model keys", report.missing),
        ("shape mismatches", report.mismatched),
    ):
        if keys:
            lines.append(f"  {len(keys)} {label}: {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}")
    ok = not (report.unmapped or report.missing or report.mismatched)
    lines.append("  every tensor fits the config" if ok else "  the weights do NOT fit the config")
    return lines


def _describe_weights(spec: str, num_classes: int | None) -> torch.nn.Module:
    config, state_dict, info = _read(spec)
    model = _build_meta(config | ({} if num_classes is None else {"num_classes": num_classes}))
    classes = info.get("classes")
    shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "") if classes else "not recorded"
    print(f"arch: {config['arch']}  ({model.num_classes} classes)")
    print(f"classes: {shown}")
    print(f"dataset: {info.get('dataset') or 'not recorded'}")
    print(f"source: {info.get('source') or 'not recorded'}")
    print("\n".join(_key_report(state_dict, model)))
    return model


def run(args: argparse.Namespace) -> int:
    from semask.registry import list_models
    from semask.tools.flops import mmcv_flops, torch_flops

    print(f"model: {args.model}")
    if args.model in list_models():
        overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
        model = _build_meta({"arch": args.model} | overrides)
    else:
        model = _describe_weights(args.model, args.num_classes)
    size = tuple(args.size)
    params = sum(p.numel() for p in model.parameters())
    print(f"params: {params / 1e6:.2f} M ({params} values)")
    print(f"input: 1x3x{size[0]}x{size[1]}")
    print(f"mmcv-style (mmseg tools/get_flops.py, module hooks): {mmcv_flops(model, size) / 1e9:.2f} GMac")
    print(f"torch FlopCounterMode (all matmul/conv ops):         {torch_flops(model, size) / 1e9:.2f} GFLOP")
    return 0
