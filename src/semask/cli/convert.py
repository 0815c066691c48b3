"""``semask convert SRC DST --from SOURCE``: official checkpoints -> semask weights (explicit, every key checked).

Whole models are written as ``DST.safetensors`` + the sidecar ``DST.json`` (config, class names, palette, source),
loadable with ``semask.load``. ``--from swin-imagenet`` / ``mit-imagenet`` write only the converted ``backbone.*``
weights, to be loaded into a model with ``semask.convert.load_imagenet_backbone`` (e.g. via ``semask train ...
--set train.pretrained=DST``).
"""

import argparse
from collections import Counter


def add_parser(sub: argparse._SubParsersAction) -> None:
    from semask.convert import SOURCES

    p = sub.add_parser(
        "convert", help="convert an official checkpoint into semask weights", description=__doc__
    )
    p.add_argument("src", help="official checkpoint (.pth/.pt or .safetensors)")
    p.add_argument("dst", help="output .safetensors (a .json config is written beside whole models)")
    p.add_argument("--from", dest="source", required=True, choices=sorted(SOURCES), help="checkpoint format")
    p.add_argument(
        "--semantic-attention",
        type=lambda text: tuple(s.strip() for s in text.split(",")),
        help="per-stage layout, e.g. window,window,global,global (default: the official FPN rule)",
    )
    p.add_argument(
        "--num-classes", type=int, help="head classes (mmseg: checked; swin-imagenet: config only)"
    )
    p.add_argument(
        "--window-size", type=int, help="Swin window (mmseg: checked; swin-imagenet: tables resized to it)"
    )
    p.add_argument(
        "--sem-window-size", type=int, help="semantic window (not stored in weights; default: window)"
    )
    p.add_argument(
        "--dataset", help="dataset whose class names the sidecar records (default: by the number of classes)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from semask.convert import convert_file

    cfg, sd = convert_file(
        args.src,
        args.dst,
        args.source,
        semantic_attention=args.semantic_attention,
        num_classes=args.num_classes,
        window_size=args.window_size,
        sem_window_size=args.sem_window_size,
        dataset=args.dataset,
    )
    print("inferred config:")
    for key, value in cfg.to_dict().items():
        print(f"  {key}: {value}")
    groups = Counter(k.split(".")[0] for k in sd)
    values = sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    print(
        f"wrote {len(sd)} tensors ({', '.join(f'{n} {g}' for g, n in groups.items())}; {values / 1e6:.2f} M values) to {args.dst}"
    )
    return 0
