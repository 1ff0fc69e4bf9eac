"""Data-parallel training over processes: ``torchrun --nproc_per_node N`` (or several nodes).

Each process trains on its own batches; DDP averages the gradients, and the BatchNorm layers
of the model are swapped for :class:`SyncBatchNorm`, whose statistics are those of the whole
batch across processes. So N processes with batches of B give the gradients of one process
with a batch of N x B, U-Nets included. torch's own ``SyncBatchNorm`` refuses CPU tensors;
this one works with the gloo backend on CPUs as with NCCL on GPUs.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def setup() -> tuple[int, int]:
    """``(rank, world_size)``; joins the process group torchrun describes in the environment
    (NCCL where CUDA is, gloo elsewhere). A plain run is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def teardown() -> None:
    """Leave the process group, if this process joined one, together with the others: a gloo
    process that exits still joined, or leaves while another still talks to it, can abort
    ("terminate called without an active exception"; 1 run in 8 on two CPU processes). For
    the end of a run that went well: it waits for every process (torchrun stops the others
    when one fails)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def local_device(device=None) -> torch.device:
    """The device this process trains on: ``device``, or the CPU where CUDA is not. A CUDA
    device without an index is the process's own GPU (torchrun's LOCAL_RANK), made current,
    as NCCL needs."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def is_distributed() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def data_parallel(model: nn.Module) -> nn.Module:
    """The model for the training step: as it is in one process; in several, its BatchNorm
    layers synchronised (in place, names unchanged) and wrapped in DDP."""
    if not is_distributed():
        return model
    synchronize_batch_norms(model)
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None
    )


def mean_over_processes(values: dict, device) -> dict:
    """The mean over processes of a dict of numbers (what a log line reports); ``device`` is
    the process's (NCCL reduces CUDA tensors only)."""
    if not is_distributed():
        return values
    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(values, (tensor / dist.get_world_size()).tolist()))


def synchronize_batch_norms(model: nn.Module) -> nn.Module:
    """Swap every BatchNorm layer of ``model`` for a :class:`SyncBatchNorm` with its state."""
    for name, child in model.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, SyncBatchNorm):
            synced = SyncBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            ).to(next(child.buffers()).device)
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            setattr(model, name, synced)
        else:
            synchronize_batch_norms(child)
    return model


class SyncBatchNorm(_BatchNorm):
    """BatchNorm (any dimension) over the batch of all processes; plain BatchNorm in one."""

    def _check_input_dim(self, input):
        if input.dim() < 3:
            raise ValueError(f"SyncBatchNorm takes [B, C, *shape], got {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)
        self._check_input_dim(input)
        dtype = input.dtype
        # the statistics in float32 at least, as torch's BatchNorm computes them under autocast
        input = input.to(torch.promote_types(dtype, torch.float32))
        axes = [0, *range(2, input.dim())]
        channels = (1, -1) + (1,) * (input.dim() - 2)
        count = torch.tensor([input.numel() / input.shape[1]], dtype=input.dtype)
        # two passes (mean, then squared deviations) keep the variance accurate
        totals = _AllReduceSum.apply(torch.cat([input.sum(axes), count.to(input.device)]))
        count = totals[-1]
        mean = totals[:-1] / count
        centred = input - mean.reshape(channels)
        variance = _AllReduceSum.apply((centred**2).sum(axes)) / count
        output = centred * torch.rsqrt(variance + self.eps).reshape(channels)
        if self.affine:
            output = output * self.weight.reshape(channels) + self.bias.reshape(channels)
        output = output.to(dtype)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    1.0 / self.num_batches_tracked.item()
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = variance * count / (count - 1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return output


class _AllReduceSum(torch.autograd.Function):
    """The sum over processes; its gradient is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, gradient):
        gradient = gradient.clone()
        dist.all_reduce(gradient)
        return gradient
