"""AdamW parameter groups and the warmup + poly learning-rate schedule (SPEC A3, FPN recipe).

Official source: mmcv 1.3 ``DefaultOptimizerConstructor`` with ``paramwise_cfg.custom_keys`` and
``PolyLrUpdaterHook`` with linear warmup.
"""

import torch
from torch import nn

from semask.configs.schema import OptimCfg, TrainCfg

# substring match on parameter names, as mmcv custom_keys: every LayerNorm/BatchNorm named *norm*, the
# relative position tables and absolute position embeddings get no weight decay
NO_DECAY_KEYS = ("absolute_pos_embed", "relative_position_bias_table", "norm")


def build_optimizer(model: nn.Module, cfg: OptimCfg) -> torch.optim.AdamW:
    """AdamW with two groups: decay, and no decay for names containing any of :data:`NO_DECAY_KEYS`.

    Note gamma (lambda) and the decoder's BatchNorm (``.bn.``) keep weight decay, as in the official code.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(k in name for k in NO_DECAY_KEYS) else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def lr_at(it: int, base_lr: float, cfg: TrainCfg) -> float:
    """Learning rate at iteration ``it`` (0-based): poly decay times a linear warmup factor.

    poly: (base - min_lr) * (1 - it / max_iters) ** power + min_lr; warmup (it < warmup_iters) multiplies by
    1 - (1 - it / warmup_iters) * (1 - warmup_ratio), as mmcv's ``LrUpdaterHook`` 'linear' warmup.
    """
    lr = (base_lr - cfg.min_lr) * (1 - it / cfg.max_iters) ** cfg.power + cfg.min_lr
    if it < cfg.warmup_iters:
        lr *= 1 - (1 - it / cfg.warmup_iters) * (1 - cfg.warmup_ratio)
    return lr
