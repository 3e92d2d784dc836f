"""Distributed data parallel set-up from torchrun's environment, and small collective helpers.

``torchrun --nproc_per_node N -m gmae pretrain ...`` sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT (multi-node: the same command on each node with ``--nnodes``,
``--node_rank`` / ``--rdzv-endpoint``). Without them everything runs in one process and every
helper here is a no-op.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

from gmae.devices import resolve_device
from gmae.errors import GmaeError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """Outside torchrun (no WORLD_SIZE): ``gmae.devices.resolve_device`` (also ``cuda:N``).
    Under torchrun: CPU, or GPU ``local_rank % device_count``, the same whether each process
    sees every GPU of its node or (CUDA_VISIBLE_DEVICES per rank, as some schedulers set it)
    only its own."""
    if "WORLD_SIZE" not in os.environ:
        device = resolve_device(pref)
        if device.type == "cuda" and device.index is None:  # an index: RNG forks name it
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        return device
    if pref == "cpu" or (pref == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise GmaeError("run.device is 'cuda' but no CUDA device is available")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def env_rank() -> int:
    """This process's rank as torchrun sets it (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


_store = None  # the rendezvous store, made before the process group by ``from_rank0``


def _rendezvous_store():
    """torchrun's env:// rendezvous store, made once and later handed to the process group
    (a second env:// rendezvous would try to open rank 0's port again)."""
    global _store
    if _store is None:
        world_size = int(os.environ["WORLD_SIZE"])
        store, _, _ = next(
            dist.rendezvous("env://", env_rank(), world_size, timeout=default_pg_timeout)
        )
        store.set_timeout(default_pg_timeout)
        _store = store
    return _store


def from_rank0(compute: Callable[[], Any], key: str) -> Any:
    """Before the process group exists: rank 0 runs ``compute`` and every rank gets its
    JSON-able result, or raises the ``GmaeError`` it raised, so a check that fails on rank 0
    fails on every rank (none waits for it forever) and other ranks need not see rank 0's
    files. In one process: ``compute()``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return compute()
    store = dist.PrefixStore("gmae/", _rendezvous_store())
    if env_rank() == 0:
        try:
            box = {"value": compute()}
        except GmaeError as exc:
            box = {"error": str(exc)}
        store.set(key, json.dumps(box))  # JSON: nothing another process sends is unpickled
    else:
        box = json.loads(store.get(key))
    if "error" in box:
        raise GmaeError(box["error"])
    return box["value"]


def init(device_pref: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (NCCL on GPU, gloo on CPU), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = env_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local_rank)
    if world_size > 1 and not dist.is_initialized():
        # The store ``from_rank0`` made, if it ran: it occupies rank 0's port already.
        store = dist.PrefixStore("default_pg", _store) if _store is not None else None
        kw = {"store": store} if store is not None else {}
        if device.type == "cuda":
            torch.cuda.set_device(device)
            # device_id binds this process to its GPU (barriers then know which one to use)
            dist.init_process_group(
                "nccl", rank=rank, world_size=world_size, device_id=device, **kw
            )
        else:
            dist.init_process_group("gloo", rank=rank, world_size=world_size, **kw)
    return DistInfo(rank, world_size, local_rank, device)


def cleanup() -> None:
    global _store
    if dist.is_initialized():
        dist.destroy_process_group()
    _store = None


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place (a no-op in one process)."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in one process)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (``[obj]`` in one process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
