"""Where 2 CPU ranks lose to 1 process with 2 threads: training steps interleaved in one run.

Each step is one of these, in turn, so that a slow spell of a shared machine falls on all of them alike:
  ceiling        rank 0 alone with 2 threads on the global batch (rank 1 waits): what bench/train_bench.py (b)
                 calls this machine's parallel ceiling
  gloo           2 ranks x 1 thread, half the batch each, plain DistributedDataParallel (gloo all-reduce)
  shared-memory  the same through training/distributed_env.data_parallel (what train.py runs)
  no-sync        the same without averaging the gradients at all: the bound for any all-reduce
Every setup has its own copy of the model and a fused AdamW. Prints each setup's median step and ceiling/setup.

    .venv/bin/python bench/ddp_step_bench.py [--steps 40] [--arch resnet18] [--image-size 96] [--batch-size 32]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUPS = ("ceiling", "gloo", "shared-memory", "no-sync")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="measured steps per setup")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch; each rank takes half")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.batch_size < 2 or args.batch_size % 2:
        parser.error("--batch-size must be even (each of the 2 ranks takes half), at least 2")
    return args


def rank_main(args):
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    from architectures import build_model
    from training.distributed_env import data_parallel, setup_distributed

    env = setup_distributed("cpu")
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
    labels = torch.randint(0, 6, (args.batch_size,), generator=generator)
    half = args.batch_size // 2
    mine = slice(env.rank * half, (env.rank + 1) * half)

    def fresh_model():
        torch.manual_seed(0)
        return build_model(args.arch, 6, "none")

    networks = {"ceiling": fresh_model(), "gloo": DistributedDataParallel(fresh_model()),
                "shared-memory": data_parallel(fresh_model(), env, torch.device("cpu")),
                "no-sync": DistributedDataParallel(fresh_model())}
    optimizers = {name: torch.optim.AdamW(network.parameters(), lr=1e-4, fused=True)
                  for name, network in networks.items()}
    times = {name: [] for name in SETUPS}
    warmup = 2 * len(SETUPS)
    for step in range(warmup + args.steps * len(SETUPS)):
        name = SETUPS[step % len(SETUPS)]
        network, optimizer = networks[name], optimizers[name]
        dist.barrier()
        started = time.perf_counter()
        if name == "ceiling":
            if env.is_main:
                torch.set_num_threads(2)
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(network(images), labels).backward()
                optimizer.step()
                torch.set_num_threads(1)
        else:
            with network.no_sync() if name == "no-sync" else nullcontext():
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(network(images[mine]), labels[mine]).backward()
            optimizer.step()
        slowest = torch.tensor([time.perf_counter() - started])
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        if step >= warmup:
            times[name].append(slowest.item())
    if env.is_main:
        ceiling = statistics.median(times["ceiling"])
        print(f"{args.arch} at {args.image_size} px, global batch {args.batch_size}, {args.steps} steps each, "
              f"interleaved:")
        for name in SETUPS:
            median = statistics.median(times[name])
            print(f"  {name:14s} {1000 * median:7.1f} ms a step   ceiling/this {ceiling / median:.3f}")
    dist.destroy_process_group()


def main(argv=None):
    args = parse_args(argv)
    if "RANK" in os.environ:
        return rank_main(args)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__,
               *(argv if argv is not None else sys.argv[1:])]
    return subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode


if __name__ == "__main__":
    sys.exit(main())
