"""``semask train PRESET --data-root DIR --out RUNDIR [--set k=v ...] [--resume] [--dist-timeout S]``.

Under ``torchrun`` a stop that every process takes together (a signal, a non-finite loss) is reported by the
main process only; the others exit with the same code, silently.
"""

import argparse
import json
import os
import sys
import traceback
from typing import NoReturn


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
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="multi-process runs: stop with an error when a process waits this long for another (default 1800)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from semask.configs import load_config

    cfg = load_config(args.preset, [f"data.root={args.data_root}", *args.overrides])
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return _train(args, cfg)  # errors are reported by semask.cli.main
    _train_process(args, cfg)


def _train(args: argparse.Namespace, cfg) -> int:
    """Train; print the final metrics as JSON (the main process)."""
    from semask.engine.train import train

    metrics = train(
        cfg,
        args.out,
        resume=args.resume,
        progress=not args.no_progress,
        stop_after=args.stop_after,
        timeout_s=args.dist_timeout,
    )
    if metrics and int(os.environ.get("RANK", "0")) == 0:  # torchrun's global rank
        print(json.dumps({k: round(metrics[k], 2) for k in ("aAcc", "mIoU", "mAcc")}))
    return 0


def _train_process(args: argparse.Namespace, cfg) -> NoReturn:
    """One process of a multi-process run. A stop every process takes together (a signal, a bad file, non-finite
    losses) is reported by the main process only; a lost process by every survivor.

    Ends the process with ``os._exit``, inside the ``except`` clause: freeing the traceback (which holds the
    DDP model) or any destructor would free DDP's reducer, which joins gloo threads that may wait for the GIL (a
    deadlock) or for a lost process. Checkpoints and logs are already written and closed.
    """
    from semask.engine.distributed import Interrupted, StoppedTogether
    from semask.errors import SemaskError

    main = int(os.environ["RANK"]) == 0
    try:
        _train(args, cfg)
    except KeyboardInterrupt as err:
        if main or not isinstance(err, Interrupted):
            print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
        _exit(130)
    except (SemaskError, OSError) as err:
        if main or not isinstance(err, StoppedTogether):  # LostContact: said by every survivor
            print(f"error: {err}", file=sys.stderr)
        _exit(2)
    except BaseException:
        traceback.print_exc()
        _exit(1)
    _exit(0)


def _exit(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
