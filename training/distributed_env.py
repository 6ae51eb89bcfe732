"""One process or many: what torchrun's RANK / WORLD_SIZE / LOCAL_RANK say, with a single process as fallback."""

import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from training.shared_memory_gradients import SharedMemoryGradients, host_supports_polling


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def single_host(self):
        """Every rank runs on this machine (torchrun on one node), so they can share memory."""
        return self.enabled and self.local_world_size == self.world_size

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def sum(self, values, device):
        """Element-wise sum of a list of numbers over all ranks (works with gloo on CPU and nccl on GPU)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def max(self, value, device):
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.item()

    def broadcast_buffers(self, module):
        """Give every rank rank 0's buffers of `module`. Batch norm's running statistics differ between ranks: DDP
        broadcasts rank 0's before each training step, then every rank updates its copy from its own batch."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def gather(self, obj):
        """List of `obj` from every rank, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


def setup_distributed(device_type):
    """Join the torchrun process group when launched by torchrun; gloo on CPU, nccl on GPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    env = Distributed(rank=int(os.environ["RANK"]), world_size=world_size,
                      local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                      local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if device_type == "cuda":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return env


def data_parallel(module, env, device):
    """`module` wrapped for data-parallel training: DistributedDataParallel when there are several ranks.

    GPUs all-reduce through NCCL. CPU ranks that all run on one x86 host average their gradients through shared
    memory in one bucket after the backward pass (shared_memory_gradients.py); other CPU ranks use gloo.
    """
    if not env.enabled:
        return module
    if device.type == "cuda":
        return DistributedDataParallel(module, device_ids=[device.index])
    if env.single_host and host_supports_polling():
        numel = sum(p.numel() for p in module.parameters() if p.requires_grad)
        averaging = SharedMemoryGradients.create(env, numel)
        if averaging is not None:
            network = DistributedDataParallel(module, gradient_as_bucket_view=True,
                                              bucket_cap_mb=numel * 4 / 2**20 + 1)     # one bucket
            network.register_comm_hook(averaging, SharedMemoryGradients.hook)
            return network
    return DistributedDataParallel(module)


def teardown_distributed(env):
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


class _RankFilter(logging.Filter):
    def __init__(self, rank):
        super().__init__()
        self.rank = rank

    def filter(self, record):
        record.rank = self.rank
        return True


def setup_logging(env, verbose=False):
    """Log lines carry the rank; ranks other than 0 log warnings only, so metric lines appear once."""
    logger = logging.getLogger("train")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s rank=%(rank)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(_RankFilter(env.rank))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO if env.is_main else logging.WARNING)
    logger.propagate = False
    return logger
