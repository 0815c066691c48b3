"""torchrun helpers: process-group set-up (gloo on CPU, nccl on CUDA) with a collective timeout, rank info, and
the decisions every process must take together (stop on a signal, skip a non-finite step) so none waits forever.

A stop or a skip seen by one process only would leave the others blocked in the next collective; here each
process contributes its view to one small all-reduce and all act on the result. A process that dies makes the
others' next collective fail at once (gloo: "Connection reset by peer"); one that hangs makes it fail after the
collective timeout (``init_distributed(timeout_s)``, ``semask train --dist-timeout``).
"""

import os
import re
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from semask.errors import SemaskError

DEFAULT_TIMEOUT_S = 1800.0  # torch's default collective timeout of gloo (30 min)


class StoppedTogether(SemaskError):
    """Every process stops here together (all raise it; the main process reports it)."""


class LostContact(SemaskError):
    """A collective failed: another process died, or hung past the timeout. The process should exit now: the
    process group's destructors may wait forever for the lost process (``semask train`` exits at once)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM reached one process or more: every process stopped together (the main one reports it)."""


def init_distributed(timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, int, torch.device]:
    """Initialise the default process group when launched by ``torchrun`` (WORLD_SIZE > 1).

    Args:
        timeout_s: collective timeout in seconds: a process waiting longer than this for another one (hung,
            or far behind) fails with an error instead of waiting forever.

    Returns:
        (rank, world_size, device): CUDA device ``LOCAL_RANK`` when available, else CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world, device


def is_main() -> bool:
    """True in a single process and on rank 0."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def agree(values: Sequence[float], device: torch.device) -> list[float]:
    """The element-wise maximum of ``values`` over the processes (one all-reduce; ``values`` in one process).

    Flags (0/1) become "any process", signal numbers "a signal some process received".
    """
    if not dist.is_initialized():
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """(N,) float values averaged over the processes (NaN/inf anywhere stays non-finite everywhere)."""
    if not dist.is_initialized():
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


_LINK_ERROR = re.compile(
    r"gloo|nccl|pair closure|connection (?:reset|closed|refused)|timed out|timeout|broken pipe|socket", re.I
)
"""What the backends say when a peer is gone, e.g. gloo's "Timed out waiting 8000ms for recv operation" or
"Application timeout caused pair closure" (the latter raised by DDP's buffer broadcast, with no "gloo" in it)."""


def is_collective_error(err: BaseException) -> bool:
    """Whether ``err``, raised in a multi-process run, is a failed collective (a peer died, or the collective
    timeout passed): a ``DistError`` or a RuntimeError whose message is one of the backends' link errors."""
    return dist.is_initialized() and (isinstance(err, dist.DistError) or bool(_LINK_ERROR.search(str(err))))


class StopFlag:
    """SIGINT/SIGTERM handler: remembers the signal; inside :meth:`interruptible` it also cuts the call short.

    The training loop asks every process at each iteration (:func:`agree`), so one signalled process stops all.
    ``signal`` is the number of the last signal received, else None.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._cut = False
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame) -> None:
        self.signal = signum
        if self._cut:  # raised at most once per interruptible call
            self._cut = False
            raise _Cut

    def interruptible(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, or None when a signal arrives during it (then :attr:`signal` is set).

        For work that may stall (data loading, one image's inference) and runs no collective, so that a process
        can leave it at once and still meet the others at the next collective.
        """
        try:
            self._cut = True
            try:
                return fn(*args)
            finally:
                self._cut = False
        except _Cut:
            return None

    @staticmethod
    def name(signum: float) -> str:
        """``"SIGTERM"`` for 15."""
        return signal.Signals(int(signum)).name

    def restore(self) -> None:
        """Reinstall the handlers found at construction."""
        for s, h in self._old.items():
            signal.signal(s, h)


class _Cut(BaseException):
    """Raised by the handler inside :meth:`StopFlag.interruptible` (never escapes it)."""


def close_distributed() -> None:
    """Destroy the default process group (no-op when there is none)."""
    if dist.is_initialized():
        dist.destroy_process_group()
