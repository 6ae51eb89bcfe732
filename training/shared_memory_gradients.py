"""Gradient averaging through shared memory, for DDP ranks that are all on one x86 CPU host.

With one rank per core, gloo's TCP loopback all-reduce of ResNet-18's 45 MB of gradients takes its CPU time
(kernel copies, socket wake-ups) from the training itself. Here the ranks map one shared block instead, and the
whole gradient is averaged once per step, after the backward pass, as DDP's communication hook over a single
bucket. Interleaved with plain DDP in one run (bench/ddp_step_bench.py, docs/benchmarks.md) this made 2 ranks x
1 thread 3-4 points of the 2-thread ceiling faster a step.

The block holds one slot per rank and one counter per rank. A bucket is cut into one chunk per rank:
  1. every rank copies the chunks the others own into its slot, then signals;
  2. rank r adds chunk r of the other slots to its own gradients, divides by the world size, publishes that mean
     in its slot, then signals;
  3. every rank copies the other ranks' means into its gradients.
A rank's slot is written in step 1 (others' chunks) and step 2 (its own chunk) and read by the others in the
step after; the next step 1 only starts once everybody has signalled, so no third signal is needed.
Ranks signal by raising their counter and wait by polling the others' counters (microseconds, where a gloo
barrier costs a round trip through the kernel). Polling is only ordered correctly on x86's memory model, which
is why other hosts use gloo. A waiting rank checks that the ranks it waits for are still alive, so a crashed
peer ends the run with an error instead of a hang.
"""

import logging
import os
import platform
import time

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

SHARED_MEMORY_DIR = "/dev/shm"
PEER_CHECK_SECONDS = 1.0
TIMEOUT_SECONDS = 30 * 60          # gloo's default collective timeout

log = logging.getLogger("train")


class PeerLost(RuntimeError):
    pass


def host_supports_polling():
    return platform.machine().lower() in ("x86_64", "amd64")


class SharedMemoryGradients:
    def __init__(self, rank, world_size, slots, counters, peer_pids):
        self.rank, self.world_size = rank, world_size
        self.slots = slots              # (world_size, capacity) float32, shared by every rank
        self.counters = counters        # (world_size,) int64, shared: how many signals each rank has given
        self.peer_pids = peer_pids
        self.signals = 0

    @classmethod
    def create(cls, env, numel):
        """The shared block for buckets of up to `numel` float32 gradients, or None (gloo is used) when some rank
        cannot map it. Collective: every rank calls it."""
        token = [os.urandom(8).hex() if env.is_main else None]
        dist.broadcast_object_list(token, src=0)
        path = os.path.join(SHARED_MEMORY_DIR, f"ddp-gradients-{token[0]}")
        counter_stride = 8              # int64s: one 64-byte cache line per rank's counter
        counter_floats = 2 * counter_stride * env.world_size     # first, where int64s are always aligned
        total_floats = counter_floats + env.world_size * numel
        failure = ""
        if env.is_main:
            try:
                with open(path, "wb") as block:
                    # reserve the pages now: a full tmpfs is an error here, not a SIGBUS in the middle of a step
                    os.posix_fallocate(block.fileno(), 0, total_floats * 4)
            except OSError as error:
                failure = f"{path}: {error.strerror or error}"
        failures = env.gather(failure)
        block = None
        if not any(failures):
            try:
                block = torch.from_file(path, shared=True, size=total_floats, dtype=torch.float32)
            except (OSError, RuntimeError) as error:
                failure = f"{path}: {error}"
            failures = env.gather(failure)
        dist.barrier()                  # every rank has mapped the block (or given up): its name can go
        if env.is_main:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        problems = [f for f in failures if f]
        if problems:
            log.warning("shared memory for the gradient all-reduce unavailable (%s): using gloo", problems[0])
            return None
        counters = block[:counter_floats].view(torch.int64).view(env.world_size, counter_stride)[:, 0]
        counters.zero_()
        peer_pids = env.gather(os.getpid())
        dist.barrier()                  # nobody signals before every counter is zeroed
        log.info("gradients are averaged through shared memory (%.1f MB per rank)", numel * 4 / 2**20)
        return cls(env.rank, env.world_size, block[counter_floats:].view(env.world_size, numel), counters, peer_pids)

    def chunk(self, length, rank):
        per_rank = -(-length // self.world_size)
        return slice(min(length, rank * per_rank), min(length, (rank + 1) * per_rank))

    def average(self, flat):
        """Replace the 1-D tensor `flat` (the same length on every rank) by its mean over the ranks."""
        length = flat.numel()
        chunks = [self.chunk(length, rank) for rank in range(self.world_size)]
        mine, slot = chunks[self.rank], self.slots[self.rank]
        for rank, part in enumerate(chunks):
            if rank != self.rank:
                slot[part] = flat[part]
        self.signal_and_wait()
        for other in range(self.world_size):
            if other != self.rank:
                flat[mine] += self.slots[other, mine]
        flat[mine] /= self.world_size
        slot[mine] = flat[mine]
        self.signal_and_wait()
        for rank, part in enumerate(chunks):
            if rank != self.rank:
                flat[part] = self.slots[rank, part]
        return flat

    def signal_and_wait(self):
        self.signals += 1
        self.counters[self.rank] = self.signals
        started = last_check = time.monotonic()
        while int(self.counters.min()) < self.signals:
            os.sched_yield()            # lets a rank we wait for run, should ranks outnumber cores
            now = time.monotonic()
            if now - last_check >= PEER_CHECK_SECONDS:
                last_check = now
                self._check_peers(now - started)

    def _check_peers(self, waited):
        behind = [rank for rank in range(self.world_size) if int(self.counters[rank]) < self.signals]
        for rank in behind:
            if not _alive(self.peer_pids[rank]):
                raise PeerLost(f"rank {rank} (pid {self.peer_pids[rank]}) exited during the gradient all-reduce")
        if waited > TIMEOUT_SECONDS:
            raise PeerLost(f"rank(s) {behind} did not reach the gradient all-reduce within {TIMEOUT_SECONDS} s")

    @staticmethod
    def hook(state, bucket):
        """DDP communication hook: the bucket's gradients, averaged over the ranks."""
        flat = bucket.buffer()
        if flat.dtype != state.slots.dtype or flat.numel() > state.slots.shape[1]:
            return default_hooks.allreduce_hook(None, bucket)     # the same on every rank: buckets are alike
        future = torch.futures.Future()
        future.set_result(state.average(flat))
        return future


def _alive(pid):
    """Whether process `pid` still runs; an exited child its parent has not reaped yet (a zombie) does not."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
