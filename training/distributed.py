"""Multi-process training under torchrun (PyTorch DDP), and the single-process case as world size 1.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; with WORLD_SIZE > 1 the process group starts with NCCL on
CUDA and gloo on the CPU. Every rank holds a full replica: DDP averages gradients in backward, and its
`broadcast_buffers` copies rank 0's buffers (the VQ-VAE codebook and its EMA statistics) to every rank at
the start of each forward, so the codebook every rank quantizes with is rank 0's. The VQ-VAE's EMA step
all-reduces its per-batch code counts and sums first (models/vqvae.py), so the codebook follows the
global batch, not rank 0's share of it; only dead-code restarts draw from rank 0's batch. `sync_buffers`
repeats the broadcast once more after the last step, so the replicas end bit-identical.
"""

import gc
import inspect
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from training.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> cuda if present, else cpu; "cuda" without a GPU is a UserError."""
    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but this torch build sees no CUDA GPU")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def setup(device_name: str) -> tuple[World, torch.device]:
    """Read torchrun's environment, pick the device and, for several ranks, start the process group."""
    world = World(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        size=int(os.environ.get("WORLD_SIZE", 1)),
    )
    device = resolve_device(device_name, world.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world.distributed and not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return world, device


def finish(world: World) -> None:
    """Wait, after a run that succeeded on every rank, until all ranks are done.

    Rank 0 saves the checkpoint after the others have finished their last collective; without this
    barrier they would exit first, and a launcher that tears the job down when any rank ends badly could
    stop rank 0 in the middle of writing it.
    """
    if world.distributed and torch_dist.is_initialized():
        torch_dist.barrier()


def teardown(world: World) -> None:
    """Destroy the process group once nothing holds it.

    DistributedDataParallel's reducer keeps a reference to the group, and the wrapper sits in reference
    cycles that only the garbage collector frees, so the group outlived `destroy_process_group` until
    interpreter exit. There a rank sometimes aborted after its last Python frame ("terminate called
    without an active exception"): the torchrun command of tests/training/test_ddp.py, repeated on a
    2-core CPU, aborted in 4 of 140 runs before `finish` and this collection were added, 0 of 260 after.
    """
    if world.distributed and torch_dist.is_initialized():
        gc.collect()
        torch_dist.destroy_process_group()


def wrap(module: nn.Module, device: torch.device, *, find_unused_parameters: bool) -> nn.Module:
    """DistributedDataParallel over `module`, broadcasting rank 0's buffers before every forward."""
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    # torch >= 2.13 renames broadcast_buffers to forward_sync_buffers (same behaviour); older builds lack it.
    name = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    sync: dict[str, Any] = {name: True}
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
        **sync,
    )


def sync_buffers(module: nn.Module, world: World) -> None:
    """Copy rank 0's buffers to every rank (what DDP does before each forward, done once more)."""
    if world.distributed:
        for buffer in module.buffers():
            torch_dist.broadcast(buffer, src=0)


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum `tensor` over the ranks in place (no-op for one process)."""
    if world.distributed:
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (so all ranks stop at the same step)."""
    if not world.distributed:
        return flag
    value = torch.tensor([int(flag)], device=device)
    torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX)
    return bool(value.item())


def gather_digests(hexdigest: str, world: World, device: torch.device) -> list[str]:
    """Every rank's sha256 hex digest, in rank order (as uint8 tensors: no pickled objects)."""
    if not world.distributed:
        return [hexdigest]
    mine = torch.tensor(list(bytes.fromhex(hexdigest)), dtype=torch.uint8, device=device)
    gathered = [torch.empty_like(mine) for _ in range(world.size)]
    torch_dist.all_gather(gathered, mine)
    return [bytes(t.cpu().tolist()).hex() for t in gathered]


class ShardSampler(Sampler[int]):
    """This rank's share of a seeded per-epoch permutation of range(n).

    Epoch e's order is a permutation drawn from (seed, e); like DistributedSampler it is padded by wrapping
    to a multiple of the world size and dealt out round-robin, so every rank gets ceil(n / world) items.
    `set_epoch(e, skip)` starts epoch e after its first `skip` items, which is how a resumed run carries on
    in the middle of an epoch with the same data it would have seen.
    """

    def __init__(self, n: int, *, seed: int, world: World, shuffle: bool = True) -> None:
        self.n, self.seed, self.world, self.shuffle = n, seed, world, shuffle
        self.per_rank = math.ceil(n / world.size)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        order = np.resize(order, self.per_rank * self.world.size)  # wraps around to pad
        return iter(order[self.world.rank :: self.world.size][self.skip :].tolist())

    def __len__(self) -> int:
        return max(self.per_rank - self.skip, 0)
