"""``semask`` command line: one sub-module per subcommand, each exposing ``add_parser(subparsers)``."""

import argparse
import importlib
import sys
import warnings

from semask.errors import SemaskError

# sub-modules of semask.cli, each registering one subcommand
_COMMANDS = ["list", "train", "eval", "predict", "convert", "info", "bench", "export", "data"]
_COMMANDS += ["serve", "push"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semask", description="SeMask semantic segmentation (pure PyTorch)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _COMMANDS:
        importlib.import_module(f"semask.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``semask`` console script. Returns the exit code.

    A :class:`SemaskError` (bad input, file or setting) or an ``OSError`` (e.g. an unwritable output folder)
    prints one ``error: <message>`` line and returns 2; an interruption (Ctrl-C, or SIGINT/SIGTERM during
    training, which first saves a checkpoint) prints one ``interrupted: ...`` line and returns 130. ``--debug``
    shows the traceback instead.
    """
    from semask.hardware import keep_freed_memory

    args = build_parser().parse_args(argv)
    keep_freed_memory()  # training steps reuse their large temporaries' pages instead of faulting in new ones
    try:
        with warnings.catch_warnings():  # restores showwarning on exit
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except (SemaskError, OSError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if args.debug:
            raise
        print(f"interrupted: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 130


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Hardware fallbacks (e.g. bf16 -> fp32 on a CPU without native bf16) as one ``note:`` line."""
    from semask.hardware import HardwareWarning

    if issubclass(category, HardwareWarning):
        print(f"note: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


if __name__ == "__main__":
    sys.exit(main())
