r"""Data-parallel training on PyTorch's own engine (torchrun + DistributedDataParallel).

Run the same script on every process with ``torchrun``::

    torchrun --nproc_per_node=4 train.py

and, in the script, before building the model::

    device = probae.distributed.setup()      # process group from torchrun's environment
    vae = VAE(...).to(device)
    probae.fit(vae, train, epochs=50, batch_size=128)   # 128 points per process and step

:func:`probae.fit` notices the process group. Every epoch rank 0 draws one
permutation of the data and broadcasts it; rank r takes the points
``order[r::world_size]`` (the permutation is padded by wrapping around so every
rank makes the same number of steps), and the loss, a Pyro ELBO's differentiable
loss, runs inside a :class:`~torch.nn.parallel.DistributedDataParallel` module
that averages gradients across ranks. With per-rank batches of b points, one
step is exactly the single-process step on the union of the ranks' batches
(:math:`W b` points): the gradient of a per-point average is the average of
the ranks' per-point averages. Only rank 0 writes checkpoints and shows progress.

A checkpoint holds every rank's random streams (gathered to rank 0 at the end of
each epoch) beside the epoch order's (rank 0's), so a run resumed with the same
number of processes continues exactly as the uninterrupted run, bit for bit; the
number of processes is part of the run and a resume with another is refused.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["setup", "is_distributed", "rank", "world_size", "cleanup"]


def is_distributed() -> bool:
    """True inside an initialized process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def setup(backend: str | None = None, device=None) -> torch.device:
    """Joins the process group described by torchrun's environment variables
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and
    returns this process's device: ``cuda:LOCAL_RANK`` where this host has a GPU for
    each of its ``LOCAL_WORLD_SIZE`` processes, else the CPU (NCCL cannot put two
    ranks on one GPU, and ``cuda:LOCAL_RANK`` must exist).

    :param str backend: ``"nccl"`` on GPUs and ``"gloo"`` on CPUs by default.
    :param device: ``"cpu"`` or ``"cuda"`` to choose instead (``"cuda"`` means
        ``cuda:LOCAL_RANK`` and needs a GPU per local process).
    """
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise RuntimeError(
            f"probae.distributed.setup needs torchrun's environment; {', '.join(missing)} "
            "not set (launch with: torchrun --nproc_per_node=N script.py)"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    device = _rank_device(local_rank, local_world, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return device


def _rank_device(local_rank: int, local_world: int, device=None) -> torch.device:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device is None:
        return torch.device("cuda", local_rank) if local_world <= gpus else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {str(device)!r}")
    if local_world > gpus:
        raise ValueError(
            f"device='cuda' needs a GPU for each of this host's {local_world} processes, "
            f"found {gpus}"
        )
    return torch.device("cuda", local_rank)


def cleanup() -> None:
    """Leaves the process group."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _Loss(nn.Module):
    """The ELBO of a model/guide pair as a module, so DistributedDataParallel can
    wrap it: its forward is the differentiable loss, its parameters the model's."""

    def __init__(self, module: nn.Module, elbo, model, guide):
        super().__init__()
        self.module = module
        self.elbo, self.model, self.guide = elbo, model, guide

    def forward(self, *args, **kwargs):
        return self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)


def wrap_loss(module: nn.Module, elbo, model, guide, find_unused_parameters: bool = False):
    """The loss of the pair inside DistributedDataParallel.

    :param bool find_unused_parameters: some parameters take no part in the loss
        (DDP must then look for them after every backward pass).
    """
    if module is None:
        raise ValueError(
            "distributed training needs a model that is a torch.nn.Module (a probae model, "
            "or a pair of bound methods of one); plain functions with pyro.param are not supported"
        )
    device = next(module.parameters()).device
    return nn.parallel.DistributedDataParallel(
        _Loss(module, elbo, model, guide),
        device_ids=[device] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


def shared_order(n: int, device) -> torch.Tensor:
    """One permutation of ``range(n)`` drawn on rank 0 and broadcast to every rank."""
    order = (
        torch.randperm(n, device=device)
        if rank() == 0
        else torch.empty(n, dtype=torch.long, device=device)
    )
    dist.broadcast(order, src=0)
    return order


def shard(order: torch.Tensor) -> torch.Tensor:
    """This rank's share of an epoch's order, padded so all ranks get equally many points."""
    world = world_size()
    padding = (-order.numel()) % world
    if padding:
        order = torch.cat([order, order[:padding]])
    return order[rank() :: world]


def all_sum(value: float, device) -> float:
    """The sum of a number over ranks."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.item()


def gather(obj) -> list | None:
    """``obj`` of every rank, in rank order, on rank 0 (None on the others); ``[obj]``
    in one process. A collective: every rank calls it."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size() if rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()
