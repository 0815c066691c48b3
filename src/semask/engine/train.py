"""The training loop, written top to bottom (SPEC A3 recipe; DDP via ``torchrun``).

Iteration-based: AdamW + linear warmup + poly decay, optional bf16/fp16 autocast (losses in fp32), gradient
clipping, periodic evaluation with best-checkpoint tracking, atomic checkpoints and exact ``--resume``.

Data order is a pure function of (seed, iteration): the global sample stream is a per-epoch permutation, and
every sample is augmented with its own generator seeded by (seed, stream position). Resuming, or splitting the
same global batch over several processes, therefore sees exactly the same samples and augmentations.
"""

import json
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from semask.configs.schema import ExperimentCfg, TrainCfg
from semask.data.datasets import build_dataset
from semask.data.transforms import TrainTransform
from semask.engine import report
from semask.engine.checkpoint import load_checkpoint, load_weights, remove_stale_temp_files, save_atomic
from semask.engine.distributed import barrier, init_distributed, is_main
from semask.engine.evaluate import evaluate
from semask.engine.inference import InferenceCfg, autocast
from semask.engine.optim import build_optimizer, lr_at
from semask.engine.sync_bn import convert_sync_batchnorm
from semask.errors import CheckpointError, ConfigError, SemaskError
from semask.hardware import resolve_amp
from semask.losses import semask_fpn_loss
from semask.registry import create_model


def build_model(cfg: ExperimentCfg) -> nn.Module:
    """The network of an experiment (FPN or mask classification), with ImageNet Swin weights when
    ``model.pretrained`` is set. ``model`` fields left at None keep the architecture's defaults.

    Raises:
        ConfigError: an unknown architecture, or a field the architecture does not have (e.g.
            ``decoder_channels`` for a Mask2Former).
    """
    m = cfg.model
    optional = {"dropout": m.dropout, "sem_drop": m.sem_drop, "decoder_channels": m.decoder_channels}
    try:
        model = create_model(
            m.arch,
            num_classes=m.num_classes,
            drop_path_rate=m.drop_path_rate,
            use_checkpoint=m.use_checkpoint,
            **{k: v for k, v in optional.items() if v is not None},
        )
    except (KeyError, TypeError) as err:
        raise ConfigError(f"model.arch={m.arch!r}: {err.args[0]}") from None
    if cfg.model.pretrained:
        from semask.convert import load_imagenet_backbone

        load_imagenet_backbone(model, cfg.model.pretrained)
    return model


def compute_losses(
    model: nn.Module, outputs, labels: torch.Tensor, t: TrainCfg, class_weight: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """The training losses of one batch, in fp32; every ``loss*`` entry is a term of the total loss.

    Mask-classification models (those with a ``losses`` method: Mask2Former, MaskFormer) use their own criterion
    (SPEC A1); FPN models :func:`semask.losses.semask_fpn_loss` with ``train.cate_weight``, ``ohem_min_kept`` and
    ``class_weight``.

    Args:
        outputs: the model's forward output on (B, 3, H, W) images; labels: (B, H, W) int64, 255 = ignore.
    """
    if hasattr(model, "losses"):
        return model.losses(outputs, labels)
    return semask_fpn_loss(
        outputs.logits.float(),
        None if outputs.prior_logits is None else outputs.prior_logits.float(),
        labels,
        cate_weight=t.cate_weight,
        ohem_min_kept=t.ohem_min_kept,
        class_weight=class_weight,
    )


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loss: the sum of the ``loss*`` entries of :func:`compute_losses` (not ``acc_seg``)."""
    return sum(v for k, v in losses.items() if k.startswith("loss"))


class SampleStream(Dataset):
    """Map-style view of one rank's share of the seeded global sample stream.

    Local index k (counted from iteration 0) -> iteration it = k // B, slot j = k % B -> global stream position
    (it * world + rank) * B + j -> (epoch, index into that epoch's permutation).
    """

    def __init__(
        self, dataset, transform: TrainTransform, seed: int, batch: int, rank: int, world: int
    ) -> None:
        self.dataset, self.transform = dataset, transform
        self.seed, self.batch, self.rank, self.world = seed, batch, rank, world
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return 2**62

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(len(self.dataset), generator=g))
        return self._perm[1]

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor] | SemaskError:
        """(image, label) of local index ``k``, or the :class:`SemaskError` (a bad file) its loading raised.

        The error is returned, not raised, so that it reaches the training loop as it is: a DataLoader worker's
        exception arrives re-created with the worker's traceback in its message. :func:`_collate` passes it on.
        """
        it, j = divmod(k, self.batch)
        pos = (it * self.world + self.rank) * self.batch + j
        epoch, idx = divmod(pos, len(self.dataset))
        try:
            item = self.dataset[int(self._permutation(epoch)[idx])]
        except SemaskError as err:
            return err
        out = self.transform(item["image"], item["label"], rng=np.random.default_rng([self.seed, pos]))
        return out["image"], out["label"]


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor] | SemaskError:
    """``default_collate`` of a batch of :class:`SampleStream` items, or the first error among them."""
    errors = [item for item in items if isinstance(item, SemaskError)]
    return errors[0] if errors else default_collate(items)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop writes a final checkpoint and stops after the current iteration.

    ``name`` is the signal's name (e.g. ``"SIGTERM"``) once one arrived, else None.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    @property
    def name(self) -> str | None:
        return None if self.signal is None else signal.Signals(self.signal).name

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _train_transform(cfg: ExperimentCfg) -> TrainTransform:
    d = cfg.data
    return TrainTransform(
        crop_size=d.crop_size,
        scale=d.scale,
        ratios=d.ratios,
        ratio_range=d.ratio_range,
        cat_max_ratio=d.cat_max_ratio,
        flip_prob=d.flip_prob,
        photometric=d.photometric,
        short_edges=d.short_edges,
        max_size=d.max_size,
        image_pad_value=d.image_pad_value,
    )


def inference_cfg(cfg: ExperimentCfg, amp: str | None = None) -> InferenceCfg:
    """Evaluation settings of an experiment (single scale, no flip)."""
    e = cfg.eval
    return InferenceCfg(
        mode=e.mode, crop=e.crop, stride=e.stride, scale=cfg.data.test_scale, amp=amp or cfg.train.amp
    )


def train(
    cfg: ExperimentCfg,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train ``cfg`` into ``out_dir`` (config.json, last.pt, best.pt, metrics.jsonl, tb/, curves.png).

    The main process prints a header (data, model, device, precision and why, ...) first and, at the end, the
    best mIoU and the next commands (:mod:`semask.engine.report`).

    ``last.pt`` is written atomically every ``train.ckpt_interval`` iterations, at the end, on SIGINT/SIGTERM,
    and (single process) when a bad file or a non-finite loss stops the run, so no finished iteration is lost.

    Args:
        resume: continue from ``out_dir/last.pt`` (model, optimizer, scaler, RNG, iteration).
        progress: show a progress bar with loss, lr and ETA.
        stop_after: pause after this iteration (writes ``last.pt``); ``resume`` continues the same schedule.

    Returns:
        The last evaluation's metrics (empty dict when no evaluation ran).

    Raises:
        KeyboardInterrupt: after SIGINT/SIGTERM, once ``last.pt`` is written (the message names the signal,
            the iteration and the checkpoint).
        DataError: a bad data folder (before anything is written) or a bad file met during training.
        CheckpointError: ``resume`` without a readable ``last.pt`` matching the model, or a checkpoint that
            cannot be written (e.g. a full disk; the previous one stays intact).
        SemaskError: a non-finite loss beyond ``train.max_nonfinite`` skipped iterations (the message names
            the iteration), or a batch size not divisible by the number of processes. Errors met during the
            loop say which iteration the run stopped after and which iteration ``last.pt`` holds.
    """
    out = Path(out_dir)
    rank, world, device = init_distributed()
    t = cfg.train
    amp = resolve_amp(t.amp, device)  # bf16 without native bf16 -> fp32 (said once); fp16 on CPU refused
    if t.batch_size % world:
        raise SemaskError(f"train.batch_size={t.batch_size} is not divisible by the {world} processes")
    local_batch = t.batch_size // world
    if not resume and (out / "last.pt").exists():
        raise SemaskError(
            f"{out / 'last.pt'} exists: pass --resume to continue that run, or choose another --out"
        )
    train_set = build_dataset(
        cfg.data.dataset, cfg.data.root, cfg.data.train_split, unknown_label=cfg.data.unknown_label
    )
    val_set = build_dataset(
        cfg.data.dataset, cfg.data.root, cfg.data.val_split, unknown_label=cfg.data.unknown_label
    )
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        for name in ("last.pt", "best.pt"):
            remove_stale_temp_files(out / name)  # left by a process killed while saving
    torch.manual_seed(t.seed)
    model = build_model(cfg).to(device)
    net: nn.Module = model
    if world > 1:
        model = convert_sync_batchnorm(model, device)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(model, cfg.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    if hasattr(model, "losses") and (t.ohem_min_kept is not None or t.class_weight is not None):
        raise ConfigError(
            f"{cfg.model.arch} uses its own criterion: train.ohem_min_kept and train.class_weight are FPN-only"
        )
    class_weight = None
    if t.class_weight is not None:
        if len(t.class_weight) != cfg.model.num_classes:
            raise ConfigError(
                f"train.class_weight has {len(t.class_weight)} values but model.num_classes is {cfg.model.num_classes}"
            )
        class_weight = torch.tensor(t.class_weight, dtype=torch.float32, device=device)
    start, best, nonfinite = 0, None, 0
    if resume:
        ckpt = load_checkpoint(out / "last.pt")
        load_weights(model, ckpt["model"], str(out / "last.pt"))
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"][rank] if rank < len(ckpt["rng"]) else ckpt["rng"][0])
        start, best, nonfinite = ckpt["iteration"], ckpt["best"], ckpt.get("nonfinite", 0)
    else:
        torch.manual_seed(t.seed + 1 + rank)  # dropout / drop-path streams differ per rank
    if is_main():
        cfg.dump(out / "config.json")  # only now: a refused resume leaves the run's config as it was
        print(report.header(cfg, train_set, val_set, model, device, world, out, start), flush=True)

    stream = SampleStream(train_set, _train_transform(cfg), t.seed, local_batch, rank, world)
    loader = DataLoader(
        stream,
        batch_size=local_batch,
        sampler=range(start * local_batch, t.max_iters * local_batch),
        num_workers=cfg.data.num_workers,
        collate_fn=_collate,
        generator=torch.Generator(),  # keeps the loader from drawing on the global RNG (exact resume)
    )

    writer = _tensorboard(out / "tb") if is_main() else None
    log = (out / "metrics.jsonl").open("a") if is_main() else None
    stop = _StopFlag()
    metrics: dict = {}
    last = out / "last.pt"
    done = saved = start  # iterations finished; iteration that last.pt holds

    def save(path: Path, it: int) -> None:
        nonlocal saved
        rng = [torch.get_rng_state()]
        if world > 1:
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        if is_main():
            state = {
                "model": model.state_dict(),
                "model_config": model.cfg.to_dict(),
                "experiment": cfg.to_dict(),
                "classes": list(train_set.meta.classes),
                "palette": [list(c) for c in train_set.meta.palette],
                "iteration": it,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng,
                "best": best,
                "nonfinite": nonfinite,
            }
            save_atomic(state, path)
        if path == last:
            saved = it

    net.train()
    bar = tqdm(total=t.max_iters, initial=start, disable=not (progress and is_main()), dynamic_ncols=True)
    t0 = time.time()
    try:
        for it, batch in zip(range(start, t.max_iters), loader, strict=False):
            if isinstance(batch, SemaskError):
                raise batch
            lr = lr_at(it, cfg.optim.lr, t)
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_mult", 1.0)  # checkpoints of semask <= 0.1 have no lr_mult
            images, labels = (x.to(device, non_blocking=True) for x in batch)
            with autocast(device, amp):
                outputs = net(images)
            losses = compute_losses(model, outputs, labels, t, class_weight)
            loss = total_loss(losses)
            optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                scaler.scale(loss).backward()
                if cfg.optim.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:  # skipped: the weights stay as they were
                nonfinite += 1
                if nonfinite > t.max_nonfinite:
                    raise SemaskError(
                        f"non-finite loss ({loss.item()}) at iteration {it}; lower optim.lr, use train.amp=none, "
                        f"or allow skips with --set train.max_nonfinite=N"
                    )
            done = it + 1
            bar.update(1)
            if done % t.log_interval == 0 or done == t.max_iters:
                scalars = {k: v.detach().item() for k, v in losses.items()} | {
                    "loss": loss.detach().item(),
                    "lr": lr,
                }
                bar.set_postfix(loss=f"{scalars['loss']:.3f}", lr=f"{scalars['lr']:.2e}")
                _log(writer, log, done, scalars | {"time_s": time.time() - t0})
            if done % t.eval_interval == 0 or done == t.max_iters:
                metrics = evaluate(
                    model,
                    val_set,
                    cfg.model.num_classes,
                    inference_cfg(cfg),
                    device,
                    progress,
                    cfg.eval.metric,
                )
                _log(writer, log, done, {k: metrics[k] for k in ("aAcc", "mIoU", "mAcc")})
                if best is None or metrics["mIoU"] > best:
                    best = metrics["mIoU"]
                    save(out / "best.pt", done)
                net.train()
            stopping = done == stop_after or (stop.signal is not None and done < t.max_iters)
            if stopping or done % t.ckpt_interval == 0 or done == t.max_iters:
                save(last, done)
                barrier()
            if done == stop_after:
                break
            if stopping:
                raise KeyboardInterrupt(
                    f"stopped by {stop.name} after iteration {done} of {t.max_iters}; checkpoint saved to {last} "
                    "(continue with --resume)"
                )
    except CheckpointError:
        raise  # writing a checkpoint failed: there is nothing more to save
    except SemaskError as err:  # a bad file or a non-finite loss: keep the finished iterations, then stop
        if world == 1 and done > saved:
            save(last, done)
        held = f"{last} holds iteration {saved}" if last.is_file() else "no checkpoint was written"
        raise type(err)(f"{err} (training stopped after iteration {done}; {held})") from None
    finally:
        stop.restore()
        bar.close()
        if writer is not None:
            writer.close()
        if log is not None:
            log.close()
    if is_main():
        report.finish(cfg, out, done, val_set)
    return metrics


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; metrics.jsonl is always written
        return None
    return SummaryWriter(str(path))


def _log(writer, log, step: int, scalars: dict[str, float]) -> None:
    if writer is not None:
        for k, v in scalars.items():
            if not math.isnan(v):
                writer.add_scalar(k, v, step)
    if log is not None:
        log.write(json.dumps({"iter": step} | scalars) + "\n")
        log.flush()
