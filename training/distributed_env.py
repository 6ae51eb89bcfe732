"""One process or many: what torchrun's RANK / WORLD_SIZE / LOCAL_RANK say, with a single process as fallback."""

import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

SHARED_MEMORY_DIR = "/dev/shm"

log = logging.getLogger("train")


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

    On GPUs, NCCL all-reduces the gradients. On CPU with every rank on this machine, they are summed through
    shared memory instead of gloo's TCP loopback: ResNet-18's 45 MB of gradients take ~15 ms that way instead
    of ~75 ms, and on a machine where every core already runs a rank, gloo's copies through the kernel compete
    with the training itself (bench/train_bench.py (b)). Across hosts, or when shared memory is short, gloo.
    """
    if not env.enabled:
        return module
    if device.type == "cuda":
        return DistributedDataParallel(module, device_ids=[device.index])
    network = DistributedDataParallel(module, gradient_as_bucket_view=True)
    if env.single_host:
        numel = sum(p.numel() for p in module.parameters() if p.requires_grad)
        reducer = SharedMemoryAllReduce.create(env, numel, torch.float32)
        if reducer is not None:
            network.register_comm_hook(reducer, SharedMemoryAllReduce.hook)
    return network


class SharedMemoryAllReduce:
    """Gradient all-reduce for ranks on one machine, as a DDP communication hook.

    Each rank maps the same shared-memory block, one slot per rank. A gradient bucket is cut into one chunk per
    rank. Every rank copies the other ranks' chunks of its gradients into its slot; rank r adds chunk r of the
    other slots to its own gradients (a reduce-scatter: the additions are spread over the ranks) and publishes
    the mean in its slot; every rank then copies the other ranks' means into its gradients.
    gloo barriers separate the phases, so a rank that fails or stops is noticed the way a gloo all-reduce would.
    The result is the mean over ranks, as DDP's default all-reduce gives (bit for bit with 2 ranks).
    """

    def __init__(self, env, slots):
        self.rank, self.world_size = env.rank, env.world_size
        self.slots = slots          # (world_size, capacity), shared by every rank

    @classmethod
    def create(cls, env, numel, dtype):
        """The shared block for buckets of up to `numel` elements, or None (gloo is used) when /dev/shm cannot
        hold it on some rank. Collective: every rank calls it."""
        token = [os.urandom(8).hex() if env.is_main else None]
        dist.broadcast_object_list(token, src=0)
        path = os.path.join(SHARED_MEMORY_DIR, f"ddp-gradients-{token[0]}")
        size = env.world_size * numel
        nbytes = size * torch.empty((), dtype=dtype).element_size()
        failure = ""
        if env.is_main:
            try:
                with open(path, "wb") as block:
                    # reserve the pages now: a full tmpfs is an error here, not a SIGBUS in the middle of a step
                    os.posix_fallocate(block.fileno(), 0, nbytes)
            except OSError as error:
                failure = f"{path}: {error.strerror or error}"
        failures = [None] * env.world_size
        dist.all_gather_object(failures, failure)
        slots = None
        if not any(failures):
            try:
                slots = torch.from_file(path, shared=True, size=size, dtype=dtype).view(env.world_size, numel)
            except (OSError, RuntimeError) as error:
                failure = f"{path}: {error}"
            dist.all_gather_object(failures, failure)
        dist.barrier()                 # every rank has mapped the block (or given up): its name can go
        if env.is_main:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        problems = [f for f in failures if f]
        if problems:
            log.warning("shared memory for the gradient all-reduce unavailable (%s): using gloo", problems[0])
            return None
        log.info("gradients are all-reduced through shared memory (%d MB per rank)", nbytes // env.world_size >> 20)
        return cls(env, slots)

    def chunk(self, length, rank):
        per_rank = -(-length // self.world_size)
        return slice(min(length, rank * per_rank), min(length, (rank + 1) * per_rank))

    def all_reduce_mean(self, flat):
        """Replace the 1-D tensor `flat` (the same length on every rank) by its mean over the ranks."""
        length = flat.numel()
        chunks = [self.chunk(length, rank) for rank in range(self.world_size)]
        mine, slot = chunks[self.rank], self.slots[self.rank]
        for rank, part in enumerate(chunks):      # what the other ranks sum
            if rank != self.rank:
                slot[part] = flat[part]
        dist.barrier()
        for other in range(self.world_size):
            if other != self.rank:
                flat[mine] += self.slots[other, mine]
        flat[mine] /= self.world_size
        slot[mine] = flat[mine]                   # published for the others
        dist.barrier()
        for rank, part in enumerate(chunks):
            if rank != self.rank:
                flat[part] = self.slots[rank, part]
        dist.barrier()                            # nobody writes the next bucket into a slot still being read
        return flat

    @staticmethod
    def hook(state, bucket):
        flat = bucket.buffer()
        if flat.dtype != state.slots.dtype or flat.numel() > state.slots.shape[1]:
            return default_hooks.allreduce_hook(None, bucket)     # the same on every rank: buckets are alike
        future = torch.futures.Future()
        future.set_result(state.all_reduce_mean(flat))
        return future


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
