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
    from semask.engine.inference import pipeline_of
    from semask.engine.train import inference_cfg
    from semask.errors import ConfigError
    from semask.metrics import format_table
    from semask.pretrained import load_model

    _, _, device = init_distributed()
    model, info = load_model(args.model, with_info=True)
    if args.compile:
        from semask.compile import compile_model

        compile_model(model, freeze=True)
    cfg = ExperimentCfg.from_dict(info["experiment"]) if "experiment" in info else ExperimentCfg()
    dataset = args.dataset or (cfg.data.dataset if "experiment" in info else None)
    if dataset is None:
        raise ConfigError("--dataset is required for converted weights (they carry no dataset)")
    infer = inference_cfg(cfg, amp=args.amp)
    infer.mode = args.mode or infer.mode
    infer.crop = tuple(args.crop) if args.crop else infer.crop
    infer.stride = tuple(args.stride) if args.stride else infer.stride
    if args.tta != "none":
        infer.flip = True
        infer.tta_ratios = tuple(args.ratios or cfg.eval.tta_ratios) if args.tta == "ms-flip" else (1.0,)
        if args.tta == "ms-flip" and not args.ratios and cfg.eval.tta_scales is not None:
            infer.tta_scales = cfg.eval.tta_scales  # detectron2 presets: shortest-edge sizes, fixed max size
    unknown_label = args.unknown_label or cfg.data.unknown_label
    data = _dataset(dataset, args.data_root, args.split or cfg.data.val_split, unknown_label)
    if data.meta.num_classes != model.num_classes:
        raise ConfigError(
            f"{args.model} predicts {model.num_classes} classes but the {dataset} dataset in {args.data_root} "
            f"has {data.meta.num_classes}"
        )
    with torch.inference_mode():
        progress = sys.stderr.isatty()  # a bar on a terminal only: logs and pipes get just results and errors
        metric = args.metric or (cfg.eval.metric if "experiment" in info else pipeline_of(model))
        results = evaluate(model.to(device), data, model.num_classes, infer, device, progress, metric)
    if is_main():
        if args.json:
            clean = json.loads(json.dumps(results), parse_constant=lambda _: None)  # NaN -> null
            print(json.dumps(clean | {"classes": list(data.meta.classes)}))
        else:
            print(format_table(results, data.meta.classes))
    return 0


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
