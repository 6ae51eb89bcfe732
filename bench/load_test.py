"""Bounded load test of the local stack: N clients call the function (which calls the endpoint) for S seconds.

Loopback only, and it stops by itself. Each client has its own boto3 lambda client with retries off, so every
error is counted; the endpoint workers' memory (RSS from /proc) is sampled every second to show whether it grows.

    invoke deploy
    .venv/bin/python bench/load_test.py --seconds 60 --clients 10 [--state-dir .state] [--json build/load.json]

tests/test_reliability_load.py runs the same `run_load` against the test stack.
"""

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config

from local.procfs import rss_mib
from local.stack import endpoint_workers
from stack_common.smoke_test import smoke_event

REPO_ROOT = Path(__file__).resolve().parent.parent


def percentile(values, fraction):
    """Nearest-rank percentile of `values` (fraction in 0..1); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))]


def summarize_latencies(seconds):
    milliseconds = [value * 1000 for value in seconds]
    return {"p50_ms": round(percentile(milliseconds, 0.50), 1) if milliseconds else None,
            "p90_ms": round(percentile(milliseconds, 0.90), 1) if milliseconds else None,
            "p99_ms": round(percentile(milliseconds, 0.99), 1) if milliseconds else None,
            "max_ms": round(max(milliseconds), 1) if milliseconds else None,
            "mean_ms": round(statistics.fmean(milliseconds), 1) if milliseconds else None}


def run_load(call, clients=10, seconds=60.0, sample=None, sample_interval_s=1.0, progress=None):
    """Run `call(client_index, request_index)` from `clients` threads until `seconds` have passed.

    `call` returns an HTTP-like status (200 = success) and may raise (counted as an error). `sample()` is called
    every `sample_interval_s` and its values are kept with their time. Returns the figures as a dict.
    """
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    latencies, errors, statuses, samples = [], [], {}, []
    start = threading.Barrier(clients + 1)

    def client(index):
        start.wait()
        count = 0
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                status = call(index, count)
            except Exception as error:   # a failed call is a result to count, not a reason to stop
                status = f"{type(error).__name__}"
            elapsed = time.perf_counter() - began
            count += 1
            with lock:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 200:
                    latencies.append(elapsed)
                else:
                    errors.append({"client": index, "status": status, "at_s": round(seconds - (deadline
                                                                                               - time.monotonic()), 2)})

    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    start.wait()
    next_report = began + 10
    while any(thread.is_alive() for thread in threads):
        if sample is not None:
            samples.append({"t_s": round(time.monotonic() - began, 1), "values": sample()})
        if progress is not None and time.monotonic() >= next_report:
            with lock:
                progress(f"{time.monotonic() - began:5.0f} s  {len(latencies)} ok  {len(errors)} errors")
            next_report += 10
        for thread in threads:
            thread.join(timeout=sample_interval_s / max(1, len(threads)))
    elapsed = time.monotonic() - began
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(latencies) + len(errors),
            "ok": len(latencies), "errors": len(errors), "error_samples": errors[:20], "statuses": statuses,
            "throughput_per_s": round(len(latencies) / elapsed, 1), **summarize_latencies(latencies),
            "samples": samples}


def memory_growth(samples, warmup_fraction=0.2):
    """Per process: median RSS over the first and the last quarter after warm-up, and the growth between them."""
    kept = samples[int(len(samples) * warmup_fraction):]
    quarter = max(1, len(kept) // 4)
    growth = {}
    for pid in {pid for entry in kept for pid in entry["values"]}:
        series = [entry["values"][pid] for entry in kept if entry["values"].get(pid) is not None]
        if len(series) < 4:
            continue
        first, last = statistics.median(series[:quarter]), statistics.median(series[-quarter:])
        growth[pid] = {"first_mib": round(first, 1), "last_mib": round(last, 1), "growth_mib": round(last - first, 1),
                       "max_mib": round(max(series), 1)}
    return growth


# ------------------------------------------------------------------------------------------------ command line

def main(args):
    state_path = Path(args.state_dir) / "stack.json"
    if not state_path.exists():
        raise SystemExit(f"no local stack in {args.state_dir} ({state_path} is missing): run `invoke deploy` first")
    state = json.loads(state_path.read_text())
    function_url = state["function"]["url"]
    function_name = state.get("settings", {}).get("function_name", "dog-breeds-local")
    payload = json.dumps(smoke_event()).encode()
    clients = [boto3.client("lambda", endpoint_url=function_url, region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local",
                            config=Config(read_timeout=70, retries={"total_max_attempts": 1}))
               for _ in range(args.clients)]

    def call(index, _count):
        answer = json.loads(clients[index].invoke(FunctionName=function_name, Payload=payload)["Payload"].read())
        return answer.get("statusCode", 500) if isinstance(answer, dict) else 500

    def sample():
        return {pid: rss_mib(pid) for pid in endpoint_workers(state["endpoint"])}

    print(f"{args.clients} clients for {args.seconds:g} s against {function_url} ({function_name})", flush=True)
    figures = run_load(call, args.clients, args.seconds, sample, progress=lambda line: print(line, flush=True))
    figures["memory"] = memory_growth(figures["samples"])
    print(f"{figures['requests']} requests, {figures['errors']} errors, {figures['throughput_per_s']}/s, "
          f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms")
    for pid, memory in figures["memory"].items():
        print(f"endpoint worker {pid}: {memory['first_mib']} -> {memory['last_mib']} MiB RSS")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def get_args_parser():
    parser = argparse.ArgumentParser(description="Bounded load test of the local stack (loopback only).")
    parser.add_argument("--state-dir", default=str(REPO_ROOT / ".state"),
                        help="the local stack's state folder (default .state)")
    parser.add_argument("--clients", type=int, default=10, help="concurrent clients (default 10)")
    parser.add_argument("--seconds", type=float, default=60, help="how long to run (default 60)")
    parser.add_argument("--json", default=None, help="also write the figures to this file (default: none)")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
