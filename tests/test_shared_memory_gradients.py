"""Data-parallel training on CPU: every rank steps with the mean of the ranks' gradients, whichever way (shared
memory on one machine, gloo otherwise) they travel; a rank that dies ends the run instead of hanging it."""

import json
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from training.shared_memory_gradients import host_supports_polling

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not host_supports_polling(), reason="shared-memory averaging is for x86 hosts only")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tiny_network():
    torch.manual_seed(0)
    # an odd number of gradients (12,647), so the ranks' chunks of a bucket differ in length and 3 slots of it
    # end off the 8-byte grid
    return torch.nn.Sequential(torch.nn.Linear(36, 301), torch.nn.ReLU(), torch.nn.Linear(301, 5))


def _join_rank(rank, world_size, port):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)


def _rank_main(rank, world_size, port, out_dir):
    """One rank: the gradients of 3 steps through data_parallel, set up 3 ways, and through plain gloo DDP."""
    _join_rank(rank, world_size, port)
    import logging

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from training import distributed_env
    from training import shared_memory_gradients

    logger = logging.getLogger("train")
    logger.setLevel(logging.INFO)
    one_machine = distributed_env.Distributed(rank=rank, world_size=world_size, local_rank=rank,
                                              local_world_size=world_size)
    several_machines = distributed_env.Distributed(rank=rank, world_size=world_size, local_rank=0,
                                                   local_world_size=1)
    setups = {"shared_memory": (one_machine, "/dev/shm"),
              "no_shared_memory": (one_machine, str(Path(out_dir) / "no-such-dir")),
              "several_machines": (several_machines, "/dev/shm")}
    networks, logs = {}, {}
    for name, (env, shared_memory_dir) in setups.items():
        records = logs[name] = []
        handler = logging.Handler()
        handler.emit = lambda record, records=records: records.append(record.getMessage())
        logger.addHandler(handler)
        shared_memory_gradients.SHARED_MEMORY_DIR = shared_memory_dir
        networks[name] = distributed_env.data_parallel(_tiny_network(), env, torch.device("cpu"))
        logger.removeHandler(handler)
    networks["gloo"] = DistributedDataParallel(_tiny_network(), bucket_cap_mb=0.02)
    steps = []
    generator = torch.Generator().manual_seed(rank)
    for _ in range(3):
        inputs = torch.randn(6, 36, generator=generator)
        for network in networks.values():
            network.zero_grad(set_to_none=True)
            network(inputs).square().mean().backward()
        steps.append({name: [p.grad.tolist() for p in network.parameters()] for name, network in networks.items()})
    dist.destroy_process_group()
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps({"steps": steps, "log": logs}))


def _run_ranks(out_dir, world_size):
    mp.spawn(_rank_main, args=(world_size, _free_port(), str(out_dir)), nprocs=world_size, join=True)
    return [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in range(world_size)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    before = set(Path("/dev/shm").glob("ddp-gradients-*"))
    ranks = _run_ranks(tmp_path_factory.mktemp("two-ranks"), 2)
    return ranks, before


def _assert_every_rank_steps_with_gloos_mean(ranks, setup, exact):
    for rank in ranks:
        for step in rank["steps"]:
            for ours, gloo in zip(step[setup], step["gloo"]):
                if exact:
                    assert ours == gloo
                else:
                    assert torch.allclose(torch.tensor(ours), torch.tensor(gloo), rtol=1e-6, atol=1e-7)
    assert all(rank["steps"] == ranks[0]["steps"] for rank in ranks)       # every rank holds the same gradients


def test_two_ranks_on_one_machine_average_gradients_through_shared_memory_exactly_like_gloo(two_ranks):
    ranks, shared_memory_before = two_ranks
    _assert_every_rank_steps_with_gloos_mean(ranks, "shared_memory", exact=True)   # (a + b) / 2 == a/2 + b/2
    assert any("averaged through shared memory" in line for line in ranks[0]["log"]["shared_memory"])
    assert set(Path("/dev/shm").glob("ddp-gradients-*")) == shared_memory_before      # nothing left behind


def test_three_ranks_average_through_shared_memory_in_uneven_chunks(tmp_path):
    ranks = _run_ranks(tmp_path, 3)      # 12,647 gradients: chunks of 4,216, 4,216 and 4,215
    _assert_every_rank_steps_with_gloos_mean(ranks, "shared_memory", exact=False)   # only the sum order differs
    assert any("averaged through shared memory" in line for line in ranks[0]["log"]["shared_memory"])


def test_without_usable_shared_memory_the_gradients_go_through_gloo(two_ranks):
    ranks, _ = two_ranks
    _assert_every_rank_steps_with_gloos_mean(ranks, "no_shared_memory", exact=True)
    assert any("shared memory for the gradient all-reduce unavailable" in line and "using gloo" in line
               for line in ranks[0]["log"]["no_shared_memory"])


def test_ranks_on_several_machines_use_gloo(two_ranks):
    ranks, _ = two_ranks
    _assert_every_rank_steps_with_gloos_mean(ranks, "several_machines", exact=True)
    assert not any("shared memory" in line for line in ranks[0]["log"]["several_machines"])


def _rank_that_loses_its_peer(rank, world_size, port):
    """Two steps together (DDP settles its bucket in the second's forward, through gloo); in the third, rank 1
    exits (status 0, so nothing else stops rank 0) between its forward and its backward."""
    _join_rank(rank, world_size, port)
    import os

    from training import distributed_env

    env = distributed_env.Distributed(rank=rank, world_size=world_size, local_rank=rank,
                                      local_world_size=world_size)
    network = distributed_env.data_parallel(_tiny_network(), env, torch.device("cpu"))
    for step in range(3):
        loss = network(torch.randn(6, 36)).square().mean()
        if step == 2 and rank == 1:
            os._exit(0)
        loss.backward()


def test_a_rank_that_dies_during_the_all_reduce_ends_the_run_with_an_error_instead_of_a_hang():
    context = mp.start_processes(_rank_that_loses_its_peer, args=(2, _free_port()), nprocs=2, join=False,
                                 start_method="spawn")
    started = time.monotonic()
    with pytest.raises(mp.ProcessRaisedException, match=r"rank 1 \(pid \d+\) exited during the gradient all-reduce"):
        while not context.join(timeout=1):
            if time.monotonic() - started > 60:
                for process in context.processes:
                    process.kill()
                pytest.fail("rank 0 still waits for the dead rank 1 after 60 s")
    assert time.monotonic() - started < 60
