"""``semask predict MODEL INPUT... --out DIR [--priors]``: label PNG + overlay per image (+ prior maps)."""

import argparse
import glob
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="segment images (files, folders, globs); writes label PNGs and overlays"
    )
    p.add_argument("model", help="run folder, .pt training checkpoint or converted .safetensors")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--priors", action="store_true", help="also write the four semantic-prior maps per image")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole")
    p.add_argument("--crop", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    p.add_argument("--stride", type=int, nargs=2, default=(341, 341), metavar=("H", "W"))
    p.add_argument("--amp", choices=["none", "auto", "bf16", "fp16"], default="none")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the model first (minutes; then faster)"
    )
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity")
    p.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="refuse images above N pixels (H*W), checked before decoding (default 2**26; 0: no limit)",
    )
    p.set_defaults(func=run)


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, folders' images (sorted, by suffix), glob matches; missing inputs are kept so they fail."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif any(ch in item for ch in "*?["):
            paths += sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
        else:
            paths.append(p)
    return paths


def run(args: argparse.Namespace) -> int:
    """Segment every input; bad images are skipped and listed at the end (one ``error:`` line each, exit 1).

    Raises:
        DataError: no input images were found.
        ConfigError: ``--priors`` with a model that has no semantic layers.
        CheckpointError: the model cannot be loaded.
    """
    import torch

    from semask.data.io import MAX_PIXELS, read_image
    from semask.engine.checkpoint import load_trained_model
    from semask.engine.inference import InferenceCfg, Predictor
    from semask.errors import ConfigError, DataError
    from semask.visualize import default_palette, label_image, overlay, priors_grid

    paths = expand_inputs(args.inputs)
    if not paths:
        raise DataError(f"no input images found in {' '.join(args.inputs)}")
    max_pixels = MAX_PIXELS if args.max_pixels is None else (args.max_pixels or None)
    model, info = load_trained_model(args.model)
    if args.compile:
        from semask.compile import compile_model

        compile_model(model, freeze=True)
    if args.priors and model.cfg.semantic_attention is None:
        raise ConfigError(f"--priors: {args.model} is a plain Swin model without semantic layers (no priors)")
    palette = [tuple(c) for c in info.get("palette", default_palette(model.num_classes))]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = InferenceCfg(mode=args.mode, crop=tuple(args.crop), stride=tuple(args.stride), amp=args.amp)
    predictor = Predictor(model, cfg, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    for path in paths:
        try:
            image = read_image(path, max_pixels=max_pixels)
        except DataError as e:
            failed.append(str(e))
            continue
        label = predictor.predict(image)
        label_image(label, palette).save(out / f"{path.stem}.png")
        overlay(image, label, palette, args.opacity).save(out / f"{path.stem}_overlay.jpg", quality=90)
        if args.priors:
            priors_grid(predictor.predict_priors(image), palette).save(out / f"{path.stem}_priors.png")
        print(f"{path} -> {out / path.stem}.png")
    if failed:
        print(
            f"segmented {len(paths) - len(failed)} of {len(paths)} images; {len(failed)} failed (see stderr)"
        )
        for msg in failed:
            print(f"error: {msg}", file=sys.stderr)
        return 1
    return 0
