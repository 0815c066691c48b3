"""BatchNorm synchronised across processes, on CPU (gloo) as well as CUDA.

``nn.SyncBatchNorm`` only runs on GPUs; official SeMask hard-codes SyncBN and so crashes off-GPU (issue #26).
Under DDP we synchronise the batch statistics: CUDA uses ``nn.SyncBatchNorm``, CPU :class:`DistBatchNorm2d`.
"""

import torch
import torch.distributed as dist
from torch import nn


class DistBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the global batch's (all-reduced, autograd-aware).

    Gives the same outputs and gradients as one process holding the whole global batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        c = x.shape[1]
        count = x.new_full((1,), x.numel() / c)
        stats = _AllReduceSum.apply(torch.cat([x.sum((0, 2, 3)), x.square().sum((0, 2, 3)), count]))
        total = stats[-1]
        mean = stats[:c] / total  # (C,)
        var = stats[c : 2 * c] / total - mean.square()  # (C,) biased, used for normalising
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * total / (total - 1))
            self.num_batches_tracked.add_(1)
        scale = self.weight / torch.sqrt(var + self.eps)
        return x * scale[None, :, None, None] + (self.bias - mean * scale)[None, :, None, None]


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes; the gradient is summed too (every process's loss depends on the sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` by a synchronised one (weights and running stats kept)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            bn = DistBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine).to(
                child.weight.device
            )
            bn.load_state_dict(child.state_dict())
            setattr(module, name, bn)
        else:
            convert_sync_batchnorm(child, device)
    return module
