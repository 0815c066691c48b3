"""What ``semask train`` tells its user: a header when it starts, a summary with the next commands when it ends,
and the loss / mIoU curves as ``RUN/curves.png`` (with matplotlib, the optional ``plots`` extra)."""

import json
import shlex
from pathlib import Path

import torch
from torch import nn

from semask.configs.schema import ExperimentCfg
from semask.hardware import amp_decision

CURVES = "curves.png"


def header(
    cfg: ExperimentCfg,
    train_set,
    val_set,
    model: nn.Module,
    device: torch.device,
    world: int,
    out: Path,
    start: int,
) -> str:
    """The lines printed when training starts: dataset, split sizes, classes, model, parameters, device,
    precision and why, batch, iterations and run folder.

    Args:
        train_set, val_set: the :class:`~semask.data.datasets.SegDataset` of each split.
        world: number of processes; start: the iteration the run starts from (> 0 when resuming).
    """
    d, t = cfg.data, cfg.train
    classes = train_set.meta.classes
    params = sum(p.numel() for p in model.parameters())
    _, why = amp_decision(t.amp, device)
    procs = f" x {world} processes" if world > 1 else f", {torch.get_num_threads()} threads"
    iterations = f"{t.max_iters} (evaluation every {t.eval_interval}, checkpoint every {t.ckpt_interval})"
    rows = {
        "dataset": f"{d.dataset} in {d.root}",
        "splits": f"{len(train_set)} {d.train_split} images, {len(val_set)} {d.val_split} images",
        "classes": f"{len(classes)}: {', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''}",
        "model": f"{cfg.model['arch']}, {params / 1e6:.2f} M parameters"
        + (f", ImageNet weights {t.pretrained}" if t.pretrained else ", from scratch"),
        "device": f"{device}{procs}",
        "precision": why,
        "batch": f"{t.batch_size} crops of {d.crop_size[0]}x{d.crop_size[1]}",
        "iterations": iterations + (f", resuming after iteration {start}" if start else ""),
        "run folder": f"{out} (config.json, last.pt, best.pt, metrics.jsonl)",
    }
    return "\n".join([f"semask train {cfg.name}"] + [f"  {k + ':':12}{v}" for k, v in rows.items()])


def _rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def summary(cfg: ExperimentCfg, out: Path, done: int, val_set) -> str:
    """The lines printed when training ends: the best mIoU and where it is, and the next commands.

    Args:
        done: the last finished iteration (below ``train.max_iters`` when paused with ``--stop-after``).
        val_set: the validation :class:`~semask.data.datasets.SegDataset` (its image folder is suggested to
            ``semask predict``).
    """
    evals = [r for r in _rows(out) if "mIoU" in r]
    run = shlex.quote(str(out))
    if evals:
        best = max(evals, key=lambda r: r["mIoU"])
        lines = [f"best mIoU {best['mIoU']:.2f} at iteration {best['iter']} ({out / 'best.pt'})"]
    else:
        lines = [
            f"no evaluation ran (train.eval_interval={cfg.train.eval_interval}); weights in {out / 'last.pt'}"
        ]
    if done < cfg.train.max_iters:
        lines.append(
            f"paused after iteration {done} of {cfg.train.max_iters}: continue with the same command and --resume"
        )
    images = shlex.quote(str(val_set.files[0][0].parent))
    lines += [
        "next:",
        f"  semask eval {run} --data-root {shlex.quote(str(cfg.data.root))}",
        f"  semask predict {run} {images} --out {shlex.quote(str(out / 'predictions'))}",
    ]
    return "\n".join(lines)


def save_curves(out: Path) -> str:
    """Plot the training loss and the validation mIoU against the iteration (from ``out/metrics.jsonl``) into
    ``out/curves.png``.

    Returns:
        One line saying where the PNG is, or, without matplotlib, that it was skipped and how to get it.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return f"{CURVES} not written: matplotlib is not installed (pip install matplotlib, or semask[plots])"
    series: dict[str, dict[int, float]] = {"loss": {}, "mIoU": {}}
    for row in _rows(out):  # a resumed run logs some iterations twice: the later line wins
        for key, values in series.items():
            if key in row:
                values[row["iter"]] = row[key]
    fig = Figure(figsize=(10, 4))
    for ax, (key, values) in zip(fig.subplots(1, 2), series.items(), strict=True):
        steps = sorted(values)
        ax.plot(steps, [values[s] for s in steps], marker="o" if key == "mIoU" else None)
        ax.set(
            xlabel="iteration", ylabel=key, title="training loss" if key == "loss" else "validation mIoU (%)"
        )
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / CURVES, dpi=100)
    return f"curves: {out / CURVES}"


def finish(cfg: ExperimentCfg, out: Path, done: int, val_set) -> None:
    """Print the end-of-training :func:`summary` and write the curves (:func:`save_curves`)."""
    print(save_curves(out))
    print(summary(cfg, out, done, val_set))
