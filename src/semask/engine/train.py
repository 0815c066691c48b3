"""The training loop (SPEC A3 recipe; DDP via ``torchrun``).

Iteration-based: AdamW + linear warmup + poly decay, optional bf16/fp16 autocast (losses in fp32), gradient
clipping, periodic evaluation with best-checkpoint tracking, atomic checkpoints and exact ``--resume``; the data
order is a pure function of (seed, iteration) (:mod:`semask.engine.stream`).
"""

import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from semask.configs.schema import ExperimentCfg, TrainCfg
from semask.data.datasets import build_dataset
from semask.engine import report
from semask.engine.distributed import (
    DEFAULT_TIMEOUT_S,
    Interrupted,
    LostContact,
    StopFlag,
    StoppedTogether,
    agree,
    barrier,
    close_distributed,
    init_distributed,
    is_collective_error,
    is_main,
    mean_over_processes,
)
from semask.engine.evaluate import evaluate
from semask.engine.inference import autocast
from semask.engine.optim import build_optimizer, lr_at
from semask.engine.stream import SampleStream, collate, train_transform
from semask.engine.sync_bn import convert_sync_batchnorm
from semask.errors import CheckpointError, ConfigError, SemaskError
from semask.hardware import resolve_amp
from semask.losses.base import LossSettings
from semask.models.segmenter import Segmenter
from semask.registry import create_model
from semask.weights import load_checkpoint, load_weights, remove_stale_temp_files, save_atomic


def experiment_model(cfg: ExperimentCfg) -> Segmenter:
    """The network of an experiment: ``create_model(**cfg.model)``, with ImageNet backbone weights when
    ``train.pretrained`` is set.

    Raises:
        ConfigError: an unknown architecture, or a field the architecture does not have or an invalid value.
    """
    fields = dict(cfg.model)
    arch = fields.pop("arch")
    try:
        model = create_model(arch, **fields)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"model.arch={arch!r}: {err.args[0]}") from None
    if cfg.train.pretrained:
        from semask.convert import load_imagenet_backbone

        load_imagenet_backbone(model, cfg.train.pretrained)
    return model


def loss_settings(t: TrainCfg, device: torch.device | str = "cpu") -> LossSettings:
    """The loss settings of the recipe (``train.cate_weight``, ``ohem_min_kept``, ``class_weight``)."""
    weight = (
        None if t.class_weight is None else torch.tensor(t.class_weight, dtype=torch.float32, device=device)
    )
    return LossSettings(t.cate_weight, t.ohem_min_kept, weight)


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loss: the sum of the ``loss*`` entries of ``model.losses`` (not ``acc_seg``)."""
    return sum(v for k, v in losses.items() if k.startswith("loss"))


class Trainer:
    """One run: the model, its optimizer and data, and the loop's state (``done``: iterations finished;
    ``saved``: the iteration ``last.pt`` holds; ``best``: best validation mIoU; ``nonfinite``: skipped steps;
    ``together``: every process stops at this point, so they can still save a checkpoint together; ``lost``: a
    collective failed, the process group is left as it is for the process to exit)."""

    def __init__(
        self, cfg: ExperimentCfg, out: Path, resume: bool, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.cfg, self.out, self.last, self.timeout_s = cfg, out, out / "last.pt", timeout_s
        self.owns_group = not torch.distributed.is_initialized()  # destroyed by close() when created here
        self.rank, self.world, self.device = init_distributed(timeout_s)
        self.together = self.lost = False
        t = cfg.train
        self.amp = resolve_amp(t.amp, self.device)  # bf16 without native bf16 -> fp32; fp16 refused
        if t.batch_size % self.world:
            raise SemaskError(
                f"train.batch_size={t.batch_size} is not divisible by the {self.world} processes"
            )
        if not resume and self.last.exists():
            raise SemaskError(
                f"{self.last} exists: pass --resume to continue that run, or choose another --out"
            )
        d = cfg.data
        self.train_set = build_dataset(d.dataset, d.root, d.train_split, unknown_label=d.unknown_label)
        self.val_set = build_dataset(d.dataset, d.root, d.val_split, unknown_label=d.unknown_label)
        if is_main():
            out.mkdir(parents=True, exist_ok=True)
            for name in ("last.pt", "best.pt"):
                remove_stale_temp_files(out / name)  # left by a process killed while saving
        torch.manual_seed(t.seed)
        self.model = experiment_model(cfg).to(self.device)
        self.settings = loss_settings(t, self.device)
        self.net: nn.Module = self.model
        if self.world > 1:
            self.model = convert_sync_batchnorm(self.model, self.device)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.done = self.saved = 0
        self.best: float | None = None
        self.nonfinite = 0
        if resume:
            self._restore()
        else:
            torch.manual_seed(t.seed + 1 + self.rank)  # dropout / drop-path streams differ per rank

    def _restore(self) -> None:
        """Model, optimizer, scaler, RNG and counters from ``last.pt`` (exact resume)."""
        ckpt = load_checkpoint(self.last)
        load_weights(self.model, ckpt["model"], str(self.last))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        rng = ckpt["rng"]
        torch.set_rng_state(rng[self.rank] if self.rank < len(rng) else rng[0])
        self.done = self.saved = ckpt["iteration"]
        self.best, self.nonfinite = ckpt["best"], ckpt.get("nonfinite", 0)

    def announce(self) -> None:
        """Write ``config.json`` (only now: a refused resume leaves the run's config as it was), print the header."""
        self.cfg.dump(self.out / "config.json")
        header = report.header(
            self.cfg, self.train_set, self.val_set, self.model, self.device, self.world, self.out, self.done
        )
        print(header, flush=True)

    def loader(self) -> DataLoader:
        """This rank's batches from iteration ``done`` on."""
        t, local = self.cfg.train, self.cfg.train.batch_size // self.world
        stream = SampleStream(self.train_set, train_transform(self.cfg), t.seed, local, self.rank, self.world)
        return DataLoader(
            stream,
            batch_size=local,
            sampler=range(self.done * local, t.max_iters * local),
            num_workers=self.cfg.data.num_workers,
            collate_fn=collate,
            generator=torch.Generator(),  # keeps the loader from drawing on the global RNG (exact resume)
        )

    def save(self, path: Path, it: int) -> None:
        """Write a training checkpoint atomically (every rank's RNG state; only the main process writes)."""
        rng = [torch.get_rng_state()]
        if self.world > 1:
            gathered = [None] * self.world
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        if is_main():
            meta = self.train_set.meta
            state = {
                "model": self.model.state_dict(),
                "model_config": self.model.cfg.to_dict(),
                "experiment": self.cfg.to_dict(),
                "classes": list(meta.classes),
                "palette": [list(c) for c in meta.palette],
                "iteration": it,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
                "best": self.best,
                "nonfinite": self.nonfinite,
            }
            save_atomic(state, path)
        if path == self.last:
            self.saved = it

    def check_batch(self, stop: StopFlag, batch) -> None:
        """Agree with the other processes whether to run this iteration (one all-reduce).

        Raises (on every process together):
            DataError: this process met a bad file (the others raise StoppedTogether).
            Interrupted: a process received SIGINT/SIGTERM (possibly while loading this batch).
        """
        signum, bad = agree([stop.signal or 0, isinstance(batch, SemaskError)], self.device)
        self.together = bool(signum or bad)
        if isinstance(batch, SemaskError):
            raise batch
        if bad:
            raise StoppedTogether("another process met a bad data file (its error names it)")
        if signum:
            raise Interrupted(f"stopped by {StopFlag.name(signum)}")

    def step(self, it: int, batch) -> dict[str, float]:
        """One optimisation step; returns the losses (means over the processes) and the lr. A non-finite loss
        on any process skips the update on every process (said once, by the main process).

        Raises:
            StoppedTogether: more than ``train.max_nonfinite`` skipped steps (on every process).
        """
        lr = lr_at(it, self.cfg.optim.lr, self.cfg.train)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)  # checkpoints of semask <= 0.1 have no lr_mult
        images, labels = (x.to(self.device, non_blocking=True) for x in batch)
        with autocast(self.device, self.amp):
            outputs = self.net(images)
        losses = self.model.losses(outputs, labels, self.settings)
        loss = total_loss(losses)
        local = torch.stack([v.detach().float() for v in (*losses.values(), loss)])
        scalars = dict(zip([*losses, "loss"], mean_over_processes(local).tolist(), strict=True))
        self.optimizer.zero_grad(set_to_none=True)
        if math.isfinite(scalars["loss"]):  # the same value, so the same decision, on every process
            self.scaler.scale(loss).backward()
            if self.cfg.optim.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:  # skipped: the weights stay as they were
            self.nonfinite += 1
            limit = self.cfg.train.max_nonfinite
            if self.nonfinite > limit:
                self.together = True
                raise StoppedTogether(
                    f"non-finite loss ({scalars['loss']}) at iteration {it}; lower optim.lr, use train.amp=none, "
                    f"or allow skips with --set train.max_nonfinite=N"
                )
            if is_main():
                note = f"non-finite loss at iteration {it}: update skipped ({self.nonfinite} of max_nonfinite={limit})"
                print(f"note: {note}", file=sys.stderr, flush=True)
        return scalars | {"lr": lr}

    def validate(self, progress: bool, stop: StopFlag) -> dict:
        """Single-scale evaluation on the validation split (``eval.single_scale()``); saves ``best.pt``.

        Raises:
            Interrupted: a signal reached a process (every process stops within one image).
        """
        e, k = self.cfg.eval, self.model.num_classes
        metrics = evaluate(
            self.model, self.val_set, k, e.single_scale(), self.device, progress, e.metric, stop
        )
        if self.best is None or metrics["mIoU"] > self.best:
            self.best = metrics["mIoU"]
            self.save(self.out / "best.pt", self.done)
        self.net.train()
        return metrics

    def held(self) -> str:
        """What ``last.pt`` holds, for error messages."""
        return (
            f"{self.last} holds iteration {self.saved}"
            if self.last.is_file()
            else "no checkpoint was written"
        )

    def close(self) -> None:
        """Destroy the process group this run created, unless a collective failed (it may raise or wait)."""
        if self.owns_group and not self.lost:
            close_distributed()


def train(
    cfg: ExperimentCfg,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict:
    """Train ``cfg`` into ``out_dir`` (config.json, last.pt, best.pt, metrics.jsonl, tb/), printing a header first
    and the best mIoU and next commands at the end (:mod:`semask.engine.report`). ``last.pt`` is written
    atomically every ``train.ckpt_interval`` iterations, at the end, on SIGINT/SIGTERM, and when a bad file or a
    non-finite loss stops the run. Under ``torchrun`` the processes agree at every iteration (and every
    evaluated image) on stopping and skipping, so a signal, bad file or non-finite loss met by one stops or
    skips all; a process that dies or hangs makes the others stop with an error (``timeout_s``).

    Args:
        resume: continue from ``out_dir/last.pt`` (model, optimizer, scaler, RNG, iteration).
        progress: show a progress bar with loss, lr and ETA.
        stop_after: pause after this iteration (writes ``last.pt``); ``resume`` continues the same schedule.
        timeout_s: collective timeout of a multi-process run, in seconds.

    Returns:
        The last evaluation's metrics (empty dict when no evaluation ran).

    Raises:
        Interrupted (a KeyboardInterrupt): SIGINT/SIGTERM, once ``last.pt`` is written (the message names the
            signal, the iteration and the checkpoint); a signal cuts a stalled data load or image short.
        DataError: a bad data folder (before anything is written) or a bad file met during training.
        ConfigError: loss settings the model's criterion does not take, before anything is written.
        CheckpointError: no readable ``last.pt`` matching the model to resume, or a checkpoint that cannot be
            written (e.g. a full disk; the previous one stays intact).
        SemaskError: a non-finite loss beyond ``train.max_nonfinite`` skips, a batch size not divisible by the
            number of processes. Errors met in the loop say which iteration the run stopped after and which
            iteration ``last.pt`` holds.
        LostContact: another process died or hung (a SemaskError; exit the process after it).
    """
    out = Path(out_dir)
    run = Trainer(cfg, out, resume, timeout_s)
    run.model.criterion.check(run.settings, run.model.num_classes)
    if is_main():
        run.announce()
    writer, log = (_tensorboard(out / "tb"), (out / "metrics.jsonl").open("a")) if is_main() else (None, None)
    stop, bar = (
        StopFlag(),
        tqdm(total=cfg.train.max_iters, initial=run.done, disable=not (progress and is_main())),
    )
    run.net.train()
    try:
        metrics = _loop(run, stop, bar, writer, log, progress, stop_after)
    except (SemaskError, Interrupted, RuntimeError) as err:
        raise _stopped(run, err) from None
    finally:
        stop.restore()
        for sink in (bar, writer, log):
            if sink is not None:
                sink.close()
        run.close()
    if run.rank == 0:  # not is_main(): the process group is gone
        report.finish(cfg, out, run.done, run.val_set)
    return metrics


def _stopped(run: Trainer, err: BaseException) -> BaseException:
    """``err`` saying where training stopped, after saving the finished iterations when every process stops;
    ``err`` itself for a failed checkpoint (nothing more to save) or a RuntimeError that is not a collective's."""
    if isinstance(err, CheckpointError) or (isinstance(err, RuntimeError) and not is_collective_error(err)):
        return err
    if isinstance(err, RuntimeError):  # a collective failed: the other processes cannot take part in a save
        run.lost = True
        first = (str(err).strip() or type(err).__name__).splitlines()[0]
        return LostContact(
            f"process {run.rank} of {run.world} lost contact with the others after iteration {run.done}: another "
            f"process died, or hung longer than the {run.timeout_s:g} s collective timeout (--dist-timeout); "
            f"see the other processes' logs ({first}); {run.held()}"
        )
    if (run.world == 1 or run.together or isinstance(err, Interrupted)) and run.done > run.saved:
        run.save(run.last, run.done)  # Interrupted is always raised by every process together
    if isinstance(err, Interrupted):
        return Interrupted(
            f"{err} after iteration {run.done} of {run.cfg.train.max_iters}; checkpoint saved to {run.last} "
            "(continue with --resume)"
        )
    return type(err)(f"{err} (training stopped after iteration {run.done}; {run.held()})")


def _loop(
    run: Trainer, stop: StopFlag, bar: tqdm, writer, log, progress: bool, stop_after: int | None
) -> dict:
    """Iterations ``run.done`` to ``train.max_iters``: agree, step, log, evaluate, checkpoint."""
    t, metrics, t0 = run.cfg.train, {}, time.time()
    batches = iter(run.loader())
    for it in range(run.done, t.max_iters):
        batch = stop.interruptible(next, batches)  # None: a signal cut the loading short
        run.check_batch(stop, batch)
        scalars = run.step(it, batch)
        run.done = done = it + 1
        bar.update(1)
        if done % t.log_interval == 0 or done == t.max_iters:
            bar.set_postfix(loss=f"{scalars['loss']:.3f}", lr=f"{scalars['lr']:.2e}")
            _log(writer, log, done, scalars | {"time_s": time.time() - t0})
        if done % t.eval_interval == 0 or done == t.max_iters:
            metrics = run.validate(progress, stop)
            _log(writer, log, done, {k: metrics[k] for k in ("aAcc", "mIoU", "mAcc")})
        if done == stop_after or done % t.ckpt_interval == 0 or done == t.max_iters:
            run.save(run.last, done)
            barrier()
        if done == stop_after:
            break
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
