"""``semask list [PATTERN] [--configs] [--all]``: registered architectures or experiment presets."""

import argparse

INTERNAL = "_test_"  # tiny architectures for the test suite, hidden unless --all


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list architectures (default) or experiment presets (--configs)")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'semask_swin_*'")
    p.add_argument("--configs", action="store_true", help="list experiment presets instead of architectures")
    p.add_argument("--all", action="store_true", help=f"also list the internal test models (*{INTERNAL}*)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.configs:
        from semask.configs import list_configs

        names = list_configs(args.pattern)
    else:
        from semask.registry import list_models

        names = list_models(args.pattern)
    print("\n".join(n for n in names if args.all or INTERNAL not in n))
    return 0
