"""``semask data prepare coco-stuff-10k SRC DST`` and ``semask data class-weights DATASET --data-root DIR``."""

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset preparation and statistics")
    actions = p.add_subparsers(dest="action", required=True)
    prep = actions.add_parser("prepare", help="convert an official release to the layout semask reads")
    prep.add_argument("dataset", choices=["coco-stuff-10k"])
    prep.add_argument("src", help="the unpacked release (images/, annotations/*.mat, imageLists/)")
    prep.add_argument("dst", help="output folder (images/, annotations/), then used as --data-root")
    prep.set_defaults(func=_prepare)
    cw = actions.add_parser(
        "class-weights",
        help="median-frequency class weights for train.class_weight (printed as a --set value)",
    )
    cw.add_argument("dataset", help="dataset name (camvid, ade20k, cityscapes, coco-stuff-10k, folder)")
    cw.add_argument("--data-root", required=True)
    cw.add_argument("--split", default="train")
    cw.add_argument("--power", type=float, default=0.5, help="1 = original median-frequency balancing")
    cw.set_defaults(func=_class_weights)


def _prepare(args: argparse.Namespace) -> int:
    from semask.data.coco_stuff import prepare_coco_stuff_10k

    counts = prepare_coco_stuff_10k(args.src, args.dst)
    print(f"{args.dst}: " + ", ".join(f"{n} {split} pairs" for split, n in counts.items()))
    return 0


def _class_weights(args: argparse.Namespace) -> int:
    from semask.data.class_weights import median_frequency_weights
    from semask.data.datasets import build_dataset

    dataset = build_dataset(args.dataset, args.data_root, args.split)
    weights = median_frequency_weights(dataset, args.power)
    for name, w in zip(dataset.meta.classes, weights, strict=True):
        print(f"{name:>20s} {w:.4f}")
    print(f"--set 'train.class_weight={json.dumps(weights)}'")
    return 0
