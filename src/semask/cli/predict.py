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
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity")
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
    import torch

    from semask.data.io import read_image
    from semask.engine.checkpoint import load_trained_model
    from semask.engine.inference import InferenceCfg, Predictor
    from semask.errors import DataError
    from semask.visualize import default_palette, label_image, overlay, priors_grid

    model, info = load_trained_model(args.model)
    palette = [tuple(c) for c in info.get("palette", default_palette(model.num_classes))]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = InferenceCfg(mode=args.mode, crop=tuple(args.crop), stride=tuple(args.stride), amp=args.amp)
    predictor = Predictor(model, cfg, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    paths = expand_inputs(args.inputs)
    if not paths:
        print("error: no input images found", file=sys.stderr)
        return 2
    for path in paths:
        try:
            image = read_image(path)
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
        print(f"{len(failed)} of {len(paths)} inputs failed:", file=sys.stderr)
        for msg in failed:
            print(f"  {msg}", file=sys.stderr)
        return 1
    return 0
