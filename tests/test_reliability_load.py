"""Bounded load through function and endpoint (loopback only, stops by itself), and throttling past the reserved
concurrency.

RELIABILITY_LOAD_SECONDS sets the run's length (default 60, what CI runs). The figures go to
build/reliability/load.json.
"""

import base64
import json
import os
import threading
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from local import stack as local_stack_module
from bench.load_test import memory_growth, run_load
from local.procfs import rss_mib
from reliability_testlib import write_report
from serving_testlib import image_bytes

SECONDS = float(os.environ.get("RELIABILITY_LOAD_SECONDS", "60"))
CLIENTS = 10
FUNCTION = "dog-breeds-local"
IMAGE = image_bytes(size=(320, 240))


def invoke(client, event):
    """The function's statusCode, or the Lambda API's HTTP status and error code when it refuses the call."""
    try:
        response = client.invoke(FunctionName=FUNCTION, Payload=json.dumps(event).encode())
    except ClientError as error:
        return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]
    answer = json.loads(response["Payload"].read())
    return answer.get("statusCode", 500), response.get("FunctionError")


def endpoint_workers(stack):
    record = json.loads((stack.settings.state_dir / "stack.json").read_text())["endpoint"]
    return sorted(local_stack_module.endpoint_workers(record))


def test_ten_clients_for_a_minute_get_no_errors_and_flat_worker_memory_from_the_same_workers(local_stack):
    local_stack.images.image("/load.jpg", IMAGE)
    events = [{"image": base64.b64encode(IMAGE).decode(), "top_k": 3},
              {"url": local_stack.images.url("/load.jpg"), "top_k": 3}]   # half by bytes, half by URL
    clients = [local_stack.new_function_client() for _ in range(CLIENTS)]
    workers = endpoint_workers(local_stack)
    for client in clients:   # connections open and every worker warm before the clock starts
        assert invoke(client, events[0])[0] == 200

    figures = run_load(lambda index, count: invoke(clients[index], events[(index + count) % 2])[0],
                       clients=CLIENTS, seconds=SECONDS,
                       sample=lambda: {pid: rss_mib(pid) for pid in workers})
    samples = figures.pop("samples")
    memory = memory_growth(samples)
    every_10_s = [{"t_s": entry["t_s"], **{str(pid): rss for pid, rss in entry["values"].items()}}
                  for entry in samples[::10]]
    write_report("load", {**figures, "endpoint_workers": len(workers), "worker_memory": memory,
                          "worker_rss_mib_every_10_s": every_10_s})

    assert figures["errors"] == 0, figures["error_samples"]
    assert figures["ok"] >= CLIENTS * SECONDS / 5, "the stack answered far fewer requests than it should"
    # Behaviour, not speed (latency ratios are bench/serve_bench.py's): every call answered well inside
    # SageMaker's 60 s, by the same workers.
    assert figures["max_ms"] < 60_000, figures
    assert endpoint_workers(local_stack) == workers, "an endpoint worker was replaced during the run"
    assert set(memory) == set(workers)
    for pid, worker in memory.items():
        assert worker["growth_mib"] <= max(10.0, 0.05 * worker["first_mib"]), (pid, worker)


def test_invocations_beyond_the_reserved_concurrency_get_429_at_once(local_stack):
    images, settings = local_stack.images, local_stack.settings
    images.image("/load.jpg", IMAGE)
    held_event = {"url": images.url("/gated/load.jpg")}
    held, extra = [], []
    images.gate.clear()
    holders = [threading.Thread(target=lambda: held.append(invoke(local_stack.new_function_client(), held_event)[0]))
               for _ in range(settings.reserved_concurrency)]
    extra_clients = [local_stack.new_function_client() for _ in range(2 * settings.reserved_concurrency)]
    start = threading.Barrier(len(extra_clients))

    def one_extra(client):
        start.wait()
        began = time.perf_counter()
        status = invoke(client, {"image": base64.b64encode(IMAGE).decode()})
        extra.append((status, time.perf_counter() - began))

    def in_flight():
        with urllib.request.urlopen(settings.function_url + "/local/status", timeout=5) as response:
            return json.loads(response.read())["in_flight"]

    try:
        for holder in holders:
            holder.start()
        deadline = time.monotonic() + 30
        while in_flight() < settings.reserved_concurrency:
            assert time.monotonic() < deadline, "the held invocations never were all in flight"
            time.sleep(0.02)
        callers = [threading.Thread(target=one_extra, args=(client,)) for client in extra_clients]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=30)
        still_held = len(held) == 0   # every extra call was refused while all 10 admitted ones still waited
    finally:
        images.gate.set()
        for holder in holders:
            holder.join(timeout=60)
    latencies = sorted(seconds for _, seconds in extra)
    write_report("load", {"throttle": {"in_flight": settings.reserved_concurrency, "extra_calls": len(extra),
                                       "extra_429": sum(1 for status, _ in extra
                                                        if status == (429, "TooManyRequestsException")),
                                       "extra_429_max_ms": round(1000 * latencies[-1], 1) if latencies else None,
                                       "held_ok": held.count(200)}})
    assert [status for status, _ in extra] == [(429, "TooManyRequestsException")] * len(extra_clients)
    assert still_held, "an admitted call finished before the extra calls were answered: they may have queued"
    assert latencies[-1] < 2.0, f"a throttled call waited {latencies[-1]:.2f} s instead of failing at once"
    assert held == [200] * settings.reserved_concurrency


@pytest.fixture(autouse=True)
def _gate_open_afterwards(local_stack):
    yield
    local_stack.images.gate.set()
