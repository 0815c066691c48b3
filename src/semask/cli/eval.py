"""``semask eval MODEL --data-root DIR [--dataset NAME] [--mode whole|slide] [--tta ms-flip] [--json]``."""

import argparse
import json
import sys

from semask.hardware import AMPS
from semask.metrics import METRICS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run folder / checkpoint: aAcc, mIoU, mAcc, per-class table")
    p.add_argument("model", help="run folder, .pt training checkpoint or converted .safetensors")
    p.add_argument("--data-root", required=True)
    p.add_argument("--dataset", help="dataset kind (default: the run's); ade20k, cityscapes, camvid, ...")
    p.add_argument("--split", help="split to evaluate (default: the run's val split)")
    p.add_argument("--mode", choices=["whole", "slide"], help="inference mode (default: the run's)")
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="slide window")
    p.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="slide step")
    p.add_argument(
        "--tta", choices=["none", "ms-flip", "flip"], default="none", help="test-time augmentation"
    )
    p.add_argument("--ratios", type=float, nargs="+", help="ms TTA ratios (default 0.5 .. 1.75)")
    p.add_argument("--amp", choices=AMPS, default="none")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the model first (minutes; then faster)"
    )
    p.add_argument(
        "--unknown-label",
        choices=["error", "ignore"],
        help="label values that are not classes: fail naming the file, or ignore them (default: the run's)",
    )
    p.add_argument(
        "--metric",
        choices=METRICS,
        help="metric semantics of the official evaluator (default: the run's; for converted weights the model "
        "family's: mmseg for FPN, detectron2 for mask models)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from semask.configs import ExperimentCfg
    from semask.engine.distributed import init_distributed, is_main
    from semask.engine.evaluate import evaluate
    from semask.errors import ConfigError
    from semask.metrics import format_table
    from semask.tools.onednn import enable_onednn
    from semask.weights import load

    _, _, device = init_distributed()
    model, info = load(args.model, with_info=True)
    enable_onednn(model)  # fused CPU inference kernels where they run
    if args.compile:
        from semask.tools.compile import compile_model

        compile_model(model, freeze=True)
    run_cfg = ExperimentCfg.from_dict(info["experiment"]) if info.get("experiment") else None
    dataset = args.dataset or (run_cfg.data.dataset if run_cfg else info.get("dataset"))
    if dataset is None:
        raise ConfigError(f"--dataset is required: {args.model} does not say which dataset it was trained on")
    infer = _inference(args, run_cfg.eval if run_cfg else ExperimentCfg().eval)
    unknown_label = args.unknown_label or (run_cfg.data.unknown_label if run_cfg else "error")
    split = args.split or (run_cfg.data.val_split if run_cfg else "val")
    data = _dataset(dataset, args.data_root, split, unknown_label)
    if data.meta.num_classes != model.num_classes:
        raise ConfigError(
            f"{args.model} predicts {model.num_classes} classes but the {dataset} dataset in {args.data_root} "
            f"has {data.meta.num_classes}"
        )
    with torch.inference_mode():
        progress = sys.stderr.isatty()  # a bar on a terminal only: logs and pipes get just results and errors
        metric = args.metric or (run_cfg.eval.metric if run_cfg else model.test_pipeline)
        results = evaluate(model.to(device), data, model.num_classes, infer, device, progress, metric)
    if is_main():
        if args.json:
            clean = json.loads(json.dumps(results), parse_constant=lambda _: None)  # NaN -> null
            print(json.dumps(clean | {"classes": list(data.meta.classes)}))
        else:
            print(format_table(results, data.meta.classes))
    return 0


def _inference(args: argparse.Namespace, preset):
    """The run's (or the default) :class:`~semask.configs.schema.EvalCfg` with the command's options: single
    scale unless ``--tta``; ``ms-flip`` uses ``--ratios`` or the preset's TTA passes."""
    from dataclasses import replace

    infer = replace(preset.single_scale(), amp=args.amp)
    infer.mode = args.mode or infer.mode
    infer.crop = tuple(args.crop) if args.crop else infer.crop
    infer.stride = tuple(args.stride) if args.stride else infer.stride
    if args.tta == "flip":
        infer.flip = True
    elif args.tta == "ms-flip":
        infer.flip = True
        infer.tta_ratios = tuple(args.ratios or preset.tta_ratios)
        if not args.ratios:
            infer.tta_scales = preset.tta_scales  # detectron2 presets: shortest-edge sizes, fixed max size
    return infer


SPLITS = ("train", "val", "test")


def _dataset(name: str, root: str, split: str, unknown_label: str):
    """``build_dataset``; when ``split`` cannot be read but other splits can, the error lists them and suggests
    ``--split``.

    Raises:
        DataError, ConfigError: as :func:`semask.data.datasets.build_dataset`.
    """
    from semask.data.datasets import build_dataset
    from semask.errors import DataError, SemaskError

    try:
        return build_dataset(name, root, split, unknown_label=unknown_label)
    except DataError as err:
        found = []
        for other in (s for s in SPLITS if s != split):
            try:
                build_dataset(name, root, other)
                found.append(other)
            except SemaskError:
                pass
        if not found:
            raise
        raise DataError(
            f"{err}; {root} has the {name} split(s) {', '.join(found)}: evaluate one with --split {found[-1]}"
        ) from None
