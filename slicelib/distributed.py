"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; under SLURM, run ``srun torchrun --nnodes $SLURM_NNODES
--nproc_per_node $GPUS --rdzv_backend c10d --rdzv_endpoint $HEAD:29500 -m slicelib
train ...`` and torchrun derives the same variables. Without them (a plain
``python`` process) training runs in one process and nothing here is used beyond
:class:`DistInfo` with ``world_size == 1``.

Backends: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on the
CPU. Rank 0 writes checkpoints and logs; the others wait at barriers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from slicelib.device import resolve_device
from slicelib.errors import SlicelibError

log = logging.getLogger(__name__)

# How long a collective may wait. Rank 0 validates and writes checkpoints alone while the
# others wait in a broadcast: a paper-preset DDPM validation (thousands of slices, DDIM
# steps each) outlasts NCCL's default 10 minutes; a dead rank is still caught within this.
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SlicelibError(f"environment variable {name}={value!r} is not an integer") from None


def env_info() -> DistInfo:
    """The job layout from torchrun's environment variables (a single process without them)."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < max(world_size, 1):
        raise SlicelibError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def _process_device(spec: str, info: DistInfo) -> torch.device:
    device = resolve_device(spec)
    if device.type == "cuda" and info.enabled and device.index is None:
        # one GPU per process, the launcher numbers them per node
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


@contextmanager
def session(device_spec: str) -> Iterator[tuple[DistInfo, torch.device]]:
    """Join the process group described by the environment for the duration of a run.

    Yields ``(info, device)``. A process group already initialised by the caller
    (e.g. a test that spawns processes itself) is used as it is and left open;
    one initialised here is destroyed on exit.
    """
    if dist.is_available() and dist.is_initialized():
        info = DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
        yield info, _process_device(device_spec, info)
        return
    info = env_info()
    device = _process_device(device_spec, info)
    if not info.enabled:
        yield info, device
        return
    if not dist.is_available():
        raise SlicelibError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        rank=info.rank,
        world_size=info.world_size,
        timeout=PROCESS_GROUP_TIMEOUT,
    )
    if info.is_main:
        log.info("process group: %s, %d processes", backend, info.world_size)
    try:
        yield info, device
    finally:
        dist.destroy_process_group()


def sync_batchnorm(module: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``module`` with batch statistics over all processes' batches (CUDA, several processes),
    so that the improved discriminator's batch norm sees the global batch as in one
    process. PyTorch implements this for GPUs only: on the CPU each process normalises
    its own share."""
    if not info.enabled or device.type != "cuda":
        return module
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


def wrap(module: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``module`` inside DistributedDataParallel when the job has several processes."""
    if not info.enabled:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_over_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The element-wise mean of ``values`` over all processes (``values`` itself alone)."""
    if not info.enabled:
        return values
    total = values.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / info.world_size


def from_main(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process (a picklable object)."""
    if not info.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
