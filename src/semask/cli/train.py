"""``semask train PRESET --data-root DIR --out RUNDIR [--set k=v ...] [--resume]``."""

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a preset (see `semask list --configs`); torchrun for DDP")
    p.add_argument("preset", help="preset name or a run's config.json")
    p.add_argument("--data-root", required=True, help="dataset root folder")
    p.add_argument("--out", required=True, help="run folder (config.json, last.pt, best.pt, tb/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="type-checked override, e.g. train.max_iters=100 or optim.lr=6e-5 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from RUNDIR/last.pt")
    p.add_argument(
        "--stop-after", type=int, metavar="ITER", help="pause after ITER iterations (resume later)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from semask.configs import load_config
    from semask.engine.train import train

    cfg = load_config(args.preset, [f"data.root={args.data_root}", *args.overrides])
    metrics = train(
        cfg, args.out, resume=args.resume, progress=not args.no_progress, stop_after=args.stop_after
    )
    if metrics:
        print(json.dumps({k: round(metrics[k], 2) for k in ("aAcc", "mIoU", "mAcc")}))
    return 0
