"""``semask predict MODEL INPUT... --out DIR [--priors] [--no-legend] [--overwrite]``: label PNG + overlay per
image (+ prior maps), never written over an input or over a file this run did not create."""

import argparse
import glob
import sys
from collections import Counter
from pathlib import Path

from semask.hardware import AMPS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

DESCRIPTION = """Segment images and write, per input image, into --out:
  NAME.png          the label map: a palette PNG whose pixel values are class indices, coloured with the
                    dataset palette
  NAME_overlay.jpg  the image with the label map blended on, and a legend of the classes present
                    (name, colour, area %)
  NAME_priors.png   with --priors: the four per-stage semantic-prior maps, titled, with a class key
NAME is the input's file name without its extension (photo.jpg -> photo.png), or with the extension kept as
_EXT when several inputs share that name (photo.jpg, photo.png -> photo_jpg.png, photo_png.png). Inputs with
the same file name in different folders go to separate --out folders (refused otherwise). Nothing is written
over an input file, nor, without --overwrite, over any existing file: such a run stops with one error line
before writing anything."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images (files, folders, globs); writes label PNGs and overlays",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="run folder, .pt training checkpoint or converted .safetensors")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--priors", action="store_true", help="also write the four semantic-prior maps per image")
    p.add_argument(
        "--no-legend",
        action="store_true",
        help="raw outputs: no legend on overlays, no titles or key on priors",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole")
    p.add_argument("--crop", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    p.add_argument("--stride", type=int, nargs=2, default=(341, 341), metavar=("H", "W"))
    p.add_argument("--amp", choices=AMPS, default="none")
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
    """Files as given, folders' images (sorted, by suffix), glob matches, each file once; missing inputs are
    kept so they fail."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif any(ch in item for ch in "*?["):
            paths += sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
        else:
            paths.append(p)
    return list({p.resolve(): p for p in paths}.values())


def output_paths(paths: list[Path], out: Path, priors: bool) -> dict[Path, list[Path]]:
    """The files each input writes: ``[NAME.png, NAME_overlay.jpg(, NAME_priors.png)]`` under ``out``.

    ``NAME`` is the input's stem, or ``stem_EXT`` (``photo_jpg``) when several inputs share the stem.

    Raises:
        ConfigError: two inputs would write the same file (same file name in two folders).
    """
    from semask.errors import ConfigError

    stems = Counter(p.stem for p in paths)
    planned: dict[Path, list[Path]] = {}
    writer: dict[Path, Path] = {}
    for path in paths:
        name = path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.')}"
        files = [out / f"{name}.png", out / f"{name}_overlay.jpg"] + (
            [out / f"{name}_priors.png"] if priors else []
        )
        for file in files:
            if file in writer:
                raise ConfigError(
                    f"{writer[file]} and {path} would both write {file}; predict them into separate --out folders"
                )
            writer[file] = path
        planned[path] = files
    return planned


def check_outputs(planned: dict[Path, list[Path]], overwrite: bool) -> None:
    """Refuse outputs that are input files, or existing files unless ``overwrite``.

    Raises:
        ConfigError: one line naming the first such file and how many there are.
    """
    from semask.errors import ConfigError

    inputs = {p.resolve() for p in planned}
    files = [f for fs in planned.values() for f in fs]
    clobbered = [f for f in files if f.resolve() in inputs]
    if clobbered:
        raise ConfigError(
            f"{clobbered[0]} is an input image ({len(clobbered)} output(s) would replace inputs); semask predict "
            "never writes over its inputs: choose another --out"
        )
    existing = [f for f in files if f.exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"{existing[0]} exists ({len(existing)} of the {len(files)} output files do); pass --overwrite to "
            "replace them, or choose another --out"
        )


def run(args: argparse.Namespace) -> int:
    """Segment every input; bad images are skipped and listed at the end (one ``error:`` line each, exit 1).

    Raises:
        DataError: no input images were found.
        ConfigError: ``--priors`` with a model that has no semantic layers; outputs that would replace an input
            or (without ``--overwrite``) an existing file, or two inputs writing one file (nothing is written).
        CheckpointError: the model cannot be loaded.
    """
    import torch

    from semask.data.io import MAX_PIXELS, read_image
    from semask.engine.inference import InferenceCfg, Predictor
    from semask.errors import ConfigError, DataError
    from semask.tools.onednn import enable_onednn
    from semask.tools.visualize import default_palette, label_image, overlay, priors_grid
    from semask.weights import load

    paths = expand_inputs(args.inputs)
    if not paths:
        raise DataError(f"no input images found in {' '.join(args.inputs)}")
    max_pixels = MAX_PIXELS if args.max_pixels is None else (args.max_pixels or None)
    model, info = load(args.model, with_info=True)
    enable_onednn(model)  # fused CPU inference kernels where they run
    if args.compile:
        from semask.tools.compile import compile_model

        compile_model(model, freeze=True)
    if args.priors and not model.backbone.semantic:
        raise ConfigError(f"--priors: {args.model} is a plain Swin model without semantic layers (no priors)")
    out = Path(args.out)
    planned = output_paths(paths, out, args.priors)
    check_outputs(planned, args.overwrite)
    palette = [tuple(c) for c in info.get("palette") or default_palette(model.num_classes)]
    names = (
        None if args.no_legend else info.get("classes") or [f"class {k}" for k in range(model.num_classes)]
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = InferenceCfg(mode=args.mode, crop=tuple(args.crop), stride=tuple(args.stride), amp=args.amp)
    predictor = Predictor(model, cfg, device)
    out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    for path, files in planned.items():
        try:
            image = read_image(path, max_pixels=max_pixels)
        except DataError as e:
            failed.append(str(e))
            continue
        label = predictor.predict(image)
        label_image(label, palette).save(files[0])
        overlay(image, label, palette, args.opacity, names).save(files[1], quality=90)
        if args.priors:
            priors_grid(predictor.predict_priors(image), palette, names).save(files[2])
        print(f"{path} -> {files[0]}")
    if failed:
        print(
            f"segmented {len(paths) - len(failed)} of {len(paths)} images; {len(failed)} failed (see stderr)"
        )
        for msg in failed:
            print(f"error: {msg}", file=sys.stderr)
        return 1
    return 0
