"""``semask serve MODEL [--host 127.0.0.1 --port 8000]``: the demo page and JSON API for one model."""

import argparse

from semask.hardware import AMPS

DESCRIPTION = """Serve a web page where one drops or picks an image and sees the overlay (with an opacity
slider), the label map with the legend of the classes present (area %), the four per-stage semantic-prior maps
and the inference time; and a JSON API: POST /api/predict, GET /api/model, GET /healthz, documented at
/openapi.json and /docs. Binds to 127.0.0.1 (this machine only) unless --host says otherwise: --host 0.0.0.0
makes it reachable from the network. Needs the serve extra: pip install "semask[serve]"."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from semask.serve.limits import Limits

    defaults = Limits()
    p = sub.add_parser(
        "serve",
        help="demo web page + JSON API for a model",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="run folder, .pt checkpoint, .safetensors, hf://ORG/REPO[@rev] or arch name")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_bytes / 2**20, metavar="MB")
    p.add_argument(
        "--max-pixels", type=int, default=defaults.max_pixels, metavar="N", help="largest H*W decoded"
    )
    p.add_argument(
        "--queue", type=int, default=defaults.queue, help="requests waiting beyond the running one"
    )
    p.add_argument("--timeout", type=float, default=defaults.timeout_s, metavar="S", help="per-request limit")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole")
    p.add_argument("--crop", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    p.add_argument("--stride", type=int, nargs=2, default=(341, 341), metavar=("H", "W"))
    p.add_argument("--amp", choices=AMPS, default="none")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model and serve until interrupted.

    Raises:
        ConfigError: the serve extra is not installed, or invalid limits.
        CheckpointError: the model cannot be loaded.
    """
    from semask.errors import ConfigError

    try:
        import uvicorn

        from semask.serve.app import create_app
    except ImportError as e:
        raise ConfigError(
            f'semask serve needs the serve extra ({e.name} missing): pip install "semask[serve]"'
        ) from None
    import torch

    from semask.engine.inference import InferenceCfg
    from semask.serve.limits import Limits
    from semask.weights import load

    try:
        limits = Limits(int(args.max_upload_mb * 2**20), args.max_pixels, args.queue, args.timeout)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    model, info = load(args.model, with_info=True)
    cfg = InferenceCfg(mode=args.mode, crop=tuple(args.crop), stride=tuple(args.stride), amp=args.amp)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    app = create_app(model, info, limits, cfg, device)
    print(f"serving {args.model} on http://{args.host}:{args.port}/ (API docs: /docs; Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
