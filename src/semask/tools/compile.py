"""``torch.compile`` for semask networks: the opt-in top of the ``fast`` path.

Inductor fuses what eager mode runs as separate kernels (LayerNorm, GELU, residual adds, the window
pad/roll/partition, which ``fast`` computes in-graph when compiling, see :mod:`semask.layers.windows`), and with
``freeze=True`` it folds the weights into the graph as constants so oneDNN gets pre-packed weights. The first
call per input size compiles (minutes on a 2-core CPU; cached on disk by inductor for later processes).
"""

import torch
from torch import nn

from semask.hardware import check_compiler


def compile_model(model: nn.Module, freeze: bool = False, dynamic: bool | None = None) -> nn.Module:
    """Compile ``model.forward`` and ``model.predict`` in place with ``torch.compile`` (inductor).

    Args:
        model: a :class:`~semask.models.segmenter.Segmenter`.
        freeze: fold the current weights into the inference graph (inductor ``freezing``; faster on CPU). Only
            for inference-only use: a frozen graph keeps the weights it was compiled with, so never freeze a
            model that is still being trained.
        dynamic: ``torch.compile``'s ``dynamic`` (None: recompile once, then treat changing sizes as dynamic).

    Returns:
        ``model`` itself (its methods replaced by compiled wrappers; its ``state_dict`` is unchanged).

    Raises:
        ConfigError: no C++ compiler for inductor's CPU kernels (:func:`semask.hardware.check_compiler`).
    """
    if next(model.parameters()).device.type == "cpu":
        check_compiler()
    options = {"freezing": True} if freeze else None
    model.forward = torch.compile(model.forward, dynamic=dynamic, options=options)
    model.predict = torch.compile(model.predict, dynamic=dynamic, options=options)
    return model
