"""``semask list [PATTERN] [--configs]``: registered architectures or experiment presets."""

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list architectures (default) or experiment presets (--configs)")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'semask_swin_*'")
    p.add_argument("--configs", action="store_true", help="list experiment presets instead of architectures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.configs:
        from semask.configs import list_configs

        names = list_configs(args.pattern)
    else:
        from semask.registry import list_models

        names = list_models(args.pattern)
    print("\n".join(names))
    return 0
