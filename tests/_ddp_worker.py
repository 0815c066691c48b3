"""One process of the multi-process tests (``tests/test_ddp.py``), started with torchrun's environment variables.

``python tests/_ddp_worker.py step OUT``: one FPN and one Mask2Former optimisation step on this rank's share of
a fixed global batch; writes the losses and gradients to ``OUT/rank{RANK}.pt``. :func:`one_step` also gives the
single-process reference.

``python tests/_ddp_worker.py train [--nan-at I,J] [--stall load|eval] [--on-rank R] -- ARGS``: ``semask train
ARGS`` in this process, with faults injected on rank ``R`` only: NaN training losses at iterations I, J
(0-based), or a data load / an evaluated image that never finishes (the file ``stalled`` appears in the run
folder once it hangs).
"""

import argparse
import faulthandler
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from semask.engine.distributed import init_distributed
from semask.engine.sync_bn import convert_sync_batchnorm
from semask.engine.train import total_loss
from semask.losses.base import LossSettings
from semask.losses.points import ReplayPoints
from semask.registry import create_model

CLASSES, SIZE, POINTS, LAYERS = 4, 64, 128, 8  # LAYERS >= the Mask2Former prediction sets
PRESENT = [4, 4, 2, 2]  # classes in each image of the global batch: 8 target masks on rank 0, 4 on rank 1
BATCH = len(PRESENT)
NO_DROP = dict(drop_path_rate=0.0, sem_drop=0.0, dropout=0.0)
# loss_ce (CE over the queries, weighted mean) is a per-process mean in official Mask2Former as well: weight 0, so
# that the step compares the terms normalised by the all-reduced num_masks (loss_mask, loss_dice) and loss_cate
FIELDS = {
    "semask_swin_test_fpn": NO_DROP,
    "semask_swin_test_m2f": NO_DROP | {"train_num_points": POINTS, "class_weight": 0.0},
}


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(BATCH, 3, SIZE, SIZE) images and (BATCH, SIZE, SIZE) labels without void, image b holding exactly the
    classes 0 .. PRESENT[b]-1: every rank's share has as many counted pixels (so per-rank pixel means average to
    the global mean, as in the official DDP training) but not as many target masks."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
    labels = torch.stack([torch.randint(0, n, (SIZE, SIZE), generator=g) for n in PRESENT])
    assert [len(torch.unique(x)) for x in labels] == PRESENT
    return images, labels


def replay_points(first: int, count: int) -> ReplayPoints:
    """Fixed Mask2Former points of global images ``first .. first+count-1``, indexed as that rank sees them."""
    g = torch.Generator().manual_seed(1)
    matcher = {
        (layer, b): torch.rand(POINTS, 2, generator=g) for layer in range(LAYERS) for b in range(BATCH)
    }
    loss = {layer: torch.rand(sum(PRESENT), POINTS, 2, generator=g) for layer in range(LAYERS)}
    rows = slice(sum(PRESENT[:first]), sum(PRESENT[: first + count]))  # matched pairs, batch-major
    return ReplayPoints(
        {(layer, b - first): c for (layer, b), c in matcher.items() if first <= b < first + count},
        {layer: c[rows] for layer, c in loss.items()},
    )


def one_step(arch: str, rank: int, world: int) -> dict:
    """Losses and gradients of one step of ``arch`` on this rank's share (DDP + synchronised BN when world > 1)."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=CLASSES, **FIELDS[arch])
    net = model
    if world > 1:
        model = convert_sync_batchnorm(model, torch.device("cpu"))
        net = DistributedDataParallel(model)
    images, labels = global_batch()
    share = BATCH // world
    part = slice(rank * share, (rank + 1) * share)
    outputs = net(images[part])
    if arch.endswith("m2f"):
        points = replay_points(rank * share, share)
        losses = model.criterion.losses(outputs, labels[part], LossSettings(), points)
    else:
        losses = model.losses(outputs, labels[part])
    loss = total_loss(losses)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {"losses": {k: v.item() for k, v in losses.items()} | {"loss": loss.item()}, "grads": grads}


def _step(out: Path) -> None:
    rank, world, _ = init_distributed(timeout_s=60)
    results = {arch: one_step(arch, rank, world) for arch in FIELDS}
    torch.save(results, out / f"rank{rank}.pt")


def _inject(args: argparse.Namespace, run_dir: Path) -> None:
    """Patch this process as ``args`` says (only on rank ``args.on_rank``)."""
    if int(os.environ.get("RANK", "0")) != args.on_rank:
        return
    if args.nan_at:
        import semask.losses.fpn as fpn

        real, calls, bad = fpn.semask_fpn_loss, [], {int(i) for i in args.nan_at.split(",")}

        def nan_loss(*a, **k):
            losses = real(*a, **k)
            calls.append(1)
            if len(calls) - 1 in bad:
                losses["loss_ce"] = losses["loss_ce"] * float("nan")
            return losses

        fpn.semask_fpn_loss = nan_loss
    if args.stall:
        import semask.data.datasets as datasets
        import semask.engine.evaluate as evaluate

        def hang(*a, **k):
            (run_dir / "stalled").touch()
            time.sleep(3600)

        if args.stall == "eval":
            evaluate.predict_labels = hang
        else:  # the third batch of the run (a batch of 2 per process)
            real_load, calls = datasets.SegDataset.load, []

            def load(self, index):
                calls.append(1)
                return hang() if len(calls) == 5 else real_load(self, index)

            datasets.SegDataset.load = load


def _train(argv: list[str]) -> int:
    from semask.cli import main

    split = argv.index("--")
    p = argparse.ArgumentParser()
    p.add_argument("--nan-at", default="")
    p.add_argument("--stall", choices=["load", "eval"])
    p.add_argument("--on-rank", type=int, default=1)
    args, cli = p.parse_args(argv[:split]), argv[split + 1 :]
    _inject(args, Path(cli[cli.index("--out") + 1]))
    return main(cli)


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack (diagnosing a hang)
    torch.set_num_threads(1)
    if sys.argv[1] == "step":
        _step(Path(sys.argv[2]))
    else:
        sys.exit(_train(sys.argv[2:]))
