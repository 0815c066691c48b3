"""Same budget, same seeds: from-scratch CamVid runs of several presets, then a val mIoU table (mean, spread).

``python benchmarks/camvid_seeds.py --data-root ../shared/data/camvid --out runs/camvid_seeds`` trains every
(preset, seed) pair not yet finished in ``OUT/PRESET/seedS`` with ``semask train`` and the shared overrides
(``--set``, default: a shorter budget than the presets', so that 8 runs fit two hours of a 2-core CPU), then
prints one row per preset: mIoU of every seed, mean and spread (max - min), parameters, seconds per run.
The CPU (``torch.backends.cpu.get_cpu_capability()``) is printed with the table and written to ``OUT/table.json``.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

PRESETS = (
    "segformer_mit_b0_camvid-360x480_cpu",
    "semask_mit_b0_camvid-360x480_cpu",
    "swin_nano_fpn_camvid-360x480_cpu",
    "semask_swin_nano_fpn_camvid-360x480_cpu",
)
BUDGET = ("train.max_iters=400", "train.batch_size=4", "train.eval_interval=400", "train.warmup_iters=50")


def final_metrics(run: Path) -> dict | None:
    """The last evaluation row of ``run/metrics.jsonl`` (None while the run is unfinished)."""
    path = run / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    evals = [r for r in rows if "mIoU" in r]
    return evals[-1] if evals and (run / "done.json").exists() else None


def train(preset: str, seed: int, run: Path, data_root: str, sets: list[str]) -> None:
    overrides = [a for s in [*sets, f"train.seed={seed}"] for a in ("--set", s)]
    cmd = ["semask", "train", preset, "--data-root", data_root, "--out", str(run), "--no-progress"]
    start = time.monotonic()
    resume = ["--resume"] if (run / "last.pt").exists() else []
    subprocess.run([*cmd, *overrides, *resume], check=True, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - start if not resume else None
    (run / "done.json").write_text(json.dumps({"seconds": seconds}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", type=Path, default=Path("runs/camvid_seeds"))
    p.add_argument("--presets", nargs="+", default=list(PRESETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--set", dest="sets", action="append", default=list(BUDGET), metavar="KEY=VALUE")
    p.add_argument("--table-only", action="store_true", help="print the table of the finished runs")
    args = p.parse_args()
    from semask.configs import load_config
    from semask.registry import create_model

    table = []
    for preset in args.presets:
        ious, secs = [], []
        for seed in args.seeds:
            run = args.out / preset / f"seed{seed}"
            if final_metrics(run) is None and not args.table_only:
                train(preset, seed, run, args.data_root, args.sets)
            if (m := final_metrics(run)) is not None:
                ious.append(m["mIoU"])
                secs.append(json.loads((run / "done.json").read_text())["seconds"])
        fields = dict(load_config(preset).model)
        params = sum(p.numel() for p in create_model(fields.pop("arch"), **fields).parameters()) / 1e6
        table.append({"preset": preset, "params_M": params, "mIoU": ious, "seconds": secs})
    cpu = torch.backends.cpu.get_cpu_capability()
    print(f"CamVid val mIoU, {' '.join(args.sets)}, seeds {args.seeds}, CPU {cpu}")
    print("| preset (params) | mIoU per seed | mean | spread | s/run |")
    print("|---|---|---|---|---|")
    for row in table:
        ious = row["mIoU"]
        mean = f"{sum(ious) / len(ious):.2f}" if ious else "-"
        spread = f"{max(ious) - min(ious):.2f}" if ious else "-"
        secs = [s for s in row["seconds"] if s]
        per_run = f"{sum(secs) / len(secs):.0f}" if secs else "-"
        seeds = ", ".join(f"{v:.2f}" for v in ious)
        print(f"| {row['preset']} ({row['params_M']:.2f} M) | {seeds} | {mean} | {spread} | {per_run} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps({"cpu": cpu, "sets": args.sets, "rows": table}, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
