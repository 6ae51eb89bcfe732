"""One process or many: what torchrun's RANK / WORLD_SIZE / LOCAL_RANK say, with a single process as fallback."""

import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


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

    On CPU the gradients go through gloo as DDP does by default. Tried and measured (bench/train_bench.py (b),
    README): averaging them through shared memory in a DDP communication hook made the isolated all-reduce of
    ResNet-18's 45 MB 2.4x faster (55 -> 22 ms), yet whole training steps slower (920 vs 855 ms, interleaved in
    one run; forward and backward both slowed), so it was taken out again.
    """
    if not env.enabled:
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


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
