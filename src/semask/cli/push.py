"""``semask push RUN_OR_WEIGHTS ORG/REPO``: share a model through the Hugging Face Hub."""

import argparse

DESCRIPTION = """Upload a model to the Hugging Face Hub in one commit: model.safetensors, its sidecar model.json
(config, classes, palette) and a generated model card README.md (config, classes, source checkpoint and, for a
run, its validation metrics). The weights are loaded strictly first, so only valid weights are shared. The
repository is created when missing; the token is huggingface_hub's (HF_TOKEN, or `hf auth login`). Others then
use it as hf://ORG/REPO (semask.load, semask predict, semask serve). Needs the hub extra:
pip install "semask[hub]"."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push",
        help="upload a run, checkpoint or weight file to the Hugging Face Hub",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="run folder, .pt training checkpoint or .safetensors with its .json")
    p.add_argument("repo", help="Hub repository ORG/REPO")
    p.add_argument("--revision", help="branch to commit to (default: main)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--message", help="commit message")
    p.add_argument("--dry-run", action="store_true", help="stage and list the files; upload nothing")
    p.add_argument("--out", metavar="DIR", help="stage the repository files into DIR (kept) to inspect them")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Stage and upload (or, with ``--dry-run``, list) the files.

    Raises:
        ConfigError: a malformed ORG/REPO, or huggingface_hub missing.
        CheckpointError: the source cannot be loaded, or the upload failed.
    """
    from semask.hub_push import push

    lines = push(
        args.source,
        args.repo,
        revision=args.revision,
        private=args.private,
        message=args.message,
        dry_run=args.dry_run,
        folder=args.out,
    )
    print("\n".join(lines))
    return 0
