"""What this machine can run, decided in one place: kernels, autocast dtypes, compilers, devices.

Every host-dependent choice of the package reads this module:

- :func:`native_bf16`: CPU bf16 autocast only where the CPU has native bf16 dot products (AVX-512 BF16 / AMX /
  AVX-NE-CONVERT, what ``torch.ops.mkldnn._is_mkldnn_bf16_supported`` reports). Elsewhere bf16 matmuls are
  emulated (measured ~30x slower than fp32 on an AVX2 CPU) and oneDNN's bf16 kernels refuse to run.
- :func:`onednn_runs`: the fused oneDNN kernels of :mod:`semask.layers.onednn` for one dtype, only where a tiny
  probe call of the same ops succeeded in this process; plain PyTorch ops elsewhere (e.g. aarch64 builds).
- :func:`resolve_amp`: the autocast setting actually used for a requested ``amp``: ``"auto"`` is bf16 where it
  is native (CPU with native bf16, GPU with bf16) and otherwise fp32 (CPU) or fp16 (GPU); ``"bf16"`` on a CPU
  without native bf16 (or a GPU without bf16) runs fp32 and says so once; ``"fp16"`` on CPU is refused.
- :func:`check_compiler` and :func:`check_device`: ``torch.compile`` without a C compiler and a CUDA device that
  is not there are refused with one line.

The switch ``SEMASK_CPU`` (environment variable, read at import; or :func:`set_cpu_mode` /
:func:`cpu_mode` at run time) forces the decision of a weaker CPU on any host, so both paths are tested wherever
the suite runs:

- ``auto`` (default): what this CPU can do.
- ``avx2``: as on a CPU without AVX-512 / native bf16: no bf16 autocast (fp32 instead), no oneDNN bf16 kernels;
  the oneDNN fp32 kernels still run (they do on AVX2).
- ``plain``: as ``avx2``, and no oneDNN kernels at all (the plain PyTorch path of hosts where oneDNN is absent).

``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` make PyTorch itself behave
like an AVX2 CPU (``_is_mkldnn_bf16_supported()`` then reports False); CI runs the CPU-path tests that way too.
"""

import contextlib
import functools
import os
import platform
import shutil
import typing
import warnings
from collections.abc import Iterator

import torch

from semask.errors import ConfigError

CPU_MODES = ("auto", "avx2", "plain")
Amp = typing.Literal["none", "auto", "bf16", "fp16"]
"""Requested autocast setting (:func:`amp_decision`)."""
AMPS: tuple[str, ...] = typing.get_args(Amp)
_mode = os.environ.get("SEMASK_CPU", "auto").strip().lower() or "auto"
_warned: set[tuple[str, str]] = set()


class HardwareWarning(RuntimeWarning):
    """A setting this machine cannot honour and what runs instead (the CLI prints it as one ``note:`` line)."""


def get_cpu_mode() -> str:
    """The CPU decision in force: ``"auto"``, ``"avx2"`` or ``"plain"`` (see the module docstring)."""
    if _mode not in CPU_MODES:
        raise ConfigError(f"SEMASK_CPU={_mode!r} is not one of {', '.join(CPU_MODES)}")
    return _mode


def set_cpu_mode(mode: str) -> None:
    """Force the CPU decision for everything that follows (process-wide).

    Raises:
        ConfigError: ``mode`` is not one of :data:`CPU_MODES`.
    """
    global _mode
    if mode not in CPU_MODES:
        raise ConfigError(f"unknown CPU mode {mode!r}; choose from {', '.join(CPU_MODES)}")
    _mode = mode


@contextlib.contextmanager
def cpu_mode(mode: str) -> Iterator[None]:
    """``with cpu_mode("avx2"): ...`` forces ``mode`` inside the block and restores the previous one after.

    Raises:
        ConfigError: unknown ``mode``.
    """
    previous = get_cpu_mode()
    set_cpu_mode(mode)
    try:
        yield
    finally:
        set_cpu_mode(previous)


def cpu_capability() -> str:
    """PyTorch's CPU kernel level (``torch.backends.cpu.get_cpu_capability()``: e.g. ``AVX512``, ``AVX2``,
    ``DEFAULT``; honours ``ATEN_CPU_CAPABILITY``), with ``+bf16`` when bf16 is native, plus the forced
    mode when not ``auto``: the string every benchmark figure is recorded with."""
    cap = torch.backends.cpu.get_cpu_capability()
    if _hw_native_bf16():
        cap += "+bf16"
    mode = get_cpu_mode()
    return cap if mode == "auto" else f"{cap} (SEMASK_CPU={mode})"


@functools.cache
def _hw_native_bf16() -> bool:
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def native_bf16() -> bool:
    """True where CPU bf16 matmuls run natively (and the mode is ``auto``)."""
    return get_cpu_mode() == "auto" and _hw_native_bf16() and onednn_runs(torch.bfloat16)


@functools.cache
def _probe_onednn(dtype: torch.dtype) -> bool:
    """Run the fused oneDNN ops once on tiny tensors; False if they are missing or refuse (CPU, build)."""
    ops = ("_linear_pointwise", "_reorder_linear_weight", "_convolution_pointwise")
    if not (torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, op) for op in ops)):
        return False
    if dtype == torch.bfloat16 and not _hw_native_bf16():
        return False
    try:
        with torch.no_grad():
            w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(8, 8, dtype=dtype), None)
            y = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 8, dtype=dtype), w, None, "none", [], "")
            conv = torch.ops.mkldnn._convolution_pointwise(
                torch.ones(1, 8, 4, 4, dtype=dtype), torch.ones(8, 8, 3, 3, dtype=dtype), None,
                [1, 1], [1, 1], [1, 1], 1, "relu", [], "",
            )  # fmt: skip
    except RuntimeError:
        return False
    return bool(y[0, 0].item() == 8 and conv[0, 0, 1, 1].item() == 72)


def onednn_runs(dtype: torch.dtype) -> bool:
    """True where the fused oneDNN CPU kernels run for ``dtype`` (fp32 or bf16) in the current CPU mode."""
    mode = get_cpu_mode()
    if mode == "plain" or (mode == "avx2" and dtype != torch.float32):
        return False
    return dtype in (torch.float32, torch.bfloat16) and _probe_onednn(dtype)


def amp_decision(amp: str, device: torch.device | str) -> tuple[str, str]:
    """The autocast setting to use for a requested ``amp`` on ``device``, and why, without warning.

    Args:
        amp: ``"none"``, ``"auto"``, ``"bf16"`` or ``"fp16"``.
        device: where the model runs.

    Returns:
        (amp actually used, a short reason for logs and run headers).

    Raises:
        ConfigError: unknown ``amp``; ``"fp16"`` on a CPU (no fp16 autocast kernels worth running there).
    """
    device = torch.device(device)
    if amp not in AMPS:
        raise ConfigError(f"unknown amp {amp!r}; choose from {', '.join(AMPS)}")
    if amp == "none":
        return "none", "fp32 as configured"
    if amp == "auto":
        if device.type == "cpu":
            if native_bf16():
                return "bf16", f"bf16 autocast (amp='auto'): the CPU has native bf16 ({cpu_capability()})"
            return "none", f"fp32 (amp='auto'): this CPU ({cpu_capability()}) has no native bf16"
        if device.type == "cuda":
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            return amp, f"{amp} autocast (amp='auto') on {torch.cuda.get_device_name(device)}"
        return "none", f"fp32 (amp='auto') on {device.type}"
    if device.type == "cpu":
        if amp == "fp16":
            raise ConfigError(
                "amp='fp16' needs a CUDA GPU; on CPU use amp='bf16' (CPUs with native bf16) or amp='none' (fp32)"
            )
        if native_bf16():
            return "bf16", f"bf16 autocast: the CPU has native bf16 ({cpu_capability()})"
        return "none", (
            f"fp32: amp='bf16' was asked for, but this CPU ({cpu_capability()}) has no native bf16, where bf16 "
            "runs emulated and about 30x slower"
        )
    if device.type == "cuda" and amp == "bf16" and not torch.cuda.is_bf16_supported():
        return "none", f"fp32: amp='bf16' was asked for, but {torch.cuda.get_device_name(device)} has no bf16"
    return amp, f"{amp} autocast on {device.type}"


def resolve_amp(amp: str, device: torch.device | str) -> str:
    """:func:`amp_decision`'s setting; a fallback is announced once per process (:class:`HardwareWarning`).

    Raises:
        ConfigError: as :func:`amp_decision`.
    """
    used, why = amp_decision(amp, device)
    if used != amp and amp != "auto" and (amp, str(device)) not in _warned:
        _warned.add((amp, str(device)))
        warnings.warn(why, HardwareWarning, stacklevel=2)
    return used


def check_compiler() -> None:
    """Refuse ``torch.compile`` (inductor) on CPU where it cannot build its kernels.

    Raises:
        ConfigError: no C++ compiler on PATH (inductor compiles C++ for CPU kernels), or an unsupported
            platform.
    """
    cxx = os.environ.get("CXX") or next((c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)
    if cxx is None or shutil.which(cxx) is None:
        raise ConfigError(
            "--compile needs a C++ compiler for torch.compile's CPU kernels and none was found on PATH "
            "(install g++, e.g. `apt-get install g++`, or run without --compile)"
        )
    if platform.system() == "Windows":
        raise ConfigError(
            "--compile on CPU is not supported on Windows by torch.compile; run without --compile"
        )


def check_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device``, checked to exist here.

    Raises:
        ConfigError: unknown device string, or a CUDA device that this machine or this PyTorch build lacks.
    """
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {device!r}: {e}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device} asked for, but this PyTorch has no usable CUDA GPU; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device} asked for, but only {torch.cuda.device_count()} GPU(s) are visible"
            )
    elif device.type not in ("cpu", "meta"):
        available = getattr(torch, device.type, None)
        if available is None or not available.is_available():
            raise ConfigError(f"device {device} is not available in this PyTorch build; use --device cpu")
    return device


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse (process-wide, once); the ``semask`` commands and the
    benchmarks call it at start.

    PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold (128 KiB, adapting
    up to 32 MiB) with fresh ``mmap`` pages and returns freed memory at the top of its heap to the system, so a
    training step that allocates the same large temporaries every iteration pays one page fault per 4 KiB each
    time; on this project's 2-core VM that was up to half of a loss computation, and step times depended on the
    heap's history (+-20% between runs). PyTorch's CPU performance guide swaps in jemalloc/tcmalloc for the same
    reason; here ``mallopt(M_MMAP_MAX, 0)`` (no mmap'd blocks) and ``mallopt(M_TRIM_THRESHOLD, max)`` (never
    trim) do it in process. The cost: memory freed after the peak stays with the process (its RSS stays at its
    peak) until it exits.

    Returns:
        True where set (glibc); False elsewhere (other C libraries, macOS, Windows), where nothing changes.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
