"""What the container environment does on the toolkit runtime (the SageMaker toolkit on TorchServe, as in the image).

For each variant of the environment terraform/modules/endpoint sets, deploys the local stack on the toolkit runtime
(state in build/bench/, free ports), reads TorchServe's own view of the model (workers, response timeout) from its
management API, and measures images/s and latency with --clients concurrent InvokeEndpoint callers (plain HTTP,
kept-alive connections) for --seconds. Figures go to build/bench/container_env_bench-<arch>-<size>.json.

    .venv/bin/python bench/container_env_bench.py --arch resnet50 --image-size 224

--cpu-per-request N instead measures CPU time, which a shared machine's load disturbs far less than wall time:
the stacks of CPU_VARIANTS run side by side and are sent N sequential requests each, alternated (one to each,
then the four functions in-process), and each endpoint process's CPU seconds (user + system, with those of the
children it has reaped, such as TorchServe's system metrics collector) are read from /proc before and after.

    .venv/bin/python bench/container_env_bench.py --arch resnet18 --image-size 96 --cpu-per-request 400

--serial-latency N instead times N sequential requests to each TorchServe port of LATENCY_VARIANTS' stacks in
turn (the shim left out), with the four functions in-process between them, after --warm-requests to each, and
reads from TorchServe's own metrics how long it spent on those requests outside the handler.

    .venv/bin/python bench/container_env_bench.py --arch resnet18 --image-size 96 --serial-latency 300 \
        --warm-requests 400
"""

import argparse
import contextlib
import http.client
import json
import os
import re
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

from bench.serve_bench import (BENCH_DIR, PlainPost, at_least, cpu_ms_per_request, cpu_seconds_by_kind,
                               in_process_predictor, interleaved, photo_like_jpeg, prepare_model, summary)
from local import stack
from local.servers import toolkit_base_dir
from local.toolkit_endpoint import logs_dir
from local.ports import free_port
from local.settings import LocalSettings

CORES = str(os.cpu_count())
VARIANTS = {   # name: environment merged over the module's container_environment.json
    "image defaults: a worker per CPU, torch's own thread count (the core count)":
        {"OMP_NUM_THREADS": CORES},
    "SAGEMAKER_MODEL_SERVER_WORKERS=1, SAGEMAKER_MODEL_SERVER_TIMEOUT=30 (the documented knobs)":
        {"OMP_NUM_THREADS": CORES, "SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "30",
         "TS_DEFAULT_RESPONSE_TIMEOUT": "120"},
    f"TS_DEFAULT_WORKERS_PER_MODEL=1, OMP_NUM_THREADS={CORES}": {"TS_DEFAULT_WORKERS_PER_MODEL": "1",
                                                                "OMP_NUM_THREADS": CORES},
    "the module's: OMP_NUM_THREADS=1 (a worker per CPU, one thread each), TS_DEFAULT_RESPONSE_TIMEOUT=60": {},
}

# What the frontend settings of the module's environment save: without them (the JVM's default JIT, C2 included,
# and TorchServe's system metrics collector every minute) against the module's.
CPU_VARIANTS = {
    "without JAVA_TOOL_OPTIONS and TS_DISABLE_SYSTEM_METRICS": {"JAVA_TOOL_OPTIONS": "",
                                                               "TS_DISABLE_SYSTEM_METRICS": "false"},
    "the module's": {},
}

# Frontend settings the environment reaches that might shorten one request: TorchServe's Netty threads, and its
# metrics and logging modes (docs/serving.md says why the module keeps neither).
LATENCY_VARIANTS = {
    "the module's": {},
    "TS_NUMBER_OF_NETTY_THREADS=1, TS_NETTY_CLIENT_THREADS=1": {"TS_NUMBER_OF_NETTY_THREADS": "1",
                                                               "TS_NETTY_CLIENT_THREADS": "1"},
    "TS_METRICS_MODE=prometheus, TS_ASYNC_LOGGING=true": {"TS_METRICS_MODE": "prometheus",
                                                          "TS_ASYNC_LOGGING": "true"},
}


@contextlib.contextmanager
def deployed_side_by_side(variants, model_dir, work, prefix):
    """{variant: (settings, state)} of toolkit stacks for `variants`, all running at once; destroyed at the end."""
    deployed = {}
    try:
        for index, (name, environment) in enumerate(variants.items()):
            settings = LocalSettings(
                state_dir=BENCH_DIR / f"{prefix}-state-{index}", endpoint_port=free_port("127.0.0.1"),
                function_port=free_port("127.0.0.1"), model_dir=model_dir, archive=work / "model.tar.gz",
                endpoint_runtime="toolkit", endpoint_environment=tuple(environment.items()))
            deployed[name] = (settings, stack.deploy(settings, progress=lambda message: None))
        yield deployed
    finally:
        for settings, _ in deployed.values():
            stack.destroy(settings)


def cpu_per_request(args, model_dir, image, work):
    """{variant: {process kind: CPU ms per request}} of stacks side by side, plus the four functions in-process."""
    with deployed_side_by_side(CPU_VARIANTS, model_dir, work, "cpu") as deployed:
        groups = {name: state["endpoint"]["pid"] for name, (_, state) in deployed.items()}
        predict = in_process_predictor(model_dir)
        callers = {name: PlainPost(f"{settings.endpoint_url}/endpoints/{settings.endpoint_name}/invocations", image,
                                   "image/jpeg") for name, (settings, _) in deployed.items()}
        for _ in range(args.warm_requests):
            for call in callers.values():
                call()
        before = {name: cpu_seconds_by_kind(pgid) for name, pgid in groups.items()}
        in_process = 0.0
        for _ in range(args.cpu_per_request):
            for call in callers.values():
                call()
            started = time.process_time()
            predict(image)
            in_process += time.process_time() - started
        after = {name: cpu_seconds_by_kind(pgid) for name, pgid in groups.items()}
    per_request = {name: {kind: round(ms, 2) for kind, ms in
                          cpu_ms_per_request(after[name], before[name], args.cpu_per_request).items()}
                   for name in deployed}
    return per_request, round(1000 * in_process / args.cpu_per_request, 2)


def handler_gap_ms(settings, requests):
    """Median over the last `requests` (sequential) requests of TorchServe's own ts_inference_latency_microseconds
    minus the handler's PredictionTime: what TorchServe spends on a request outside inference.py. None where
    TorchServe logs no such metric (its Prometheus mode)."""
    logs = logs_dir(toolkit_base_dir(settings))
    found = []
    for name, pattern in (("ts_metrics.log", r"ts_inference_latency_microseconds\.Microseconds:([\d.]+)"),
                          ("model_metrics.log", r"PredictionTime\.ms:([\d.]+)")):
        path = logs / name
        found.append([float(value) for value in re.findall(pattern, path.read_text())] if path.exists() else [])
    latency_us, handler_ms = found
    if min(len(latency_us), len(handler_ms)) < requests:
        return None
    return statistics.median(total / 1000 - handler
                             for total, handler in zip(latency_us[-requests:], handler_ms[-requests:]))


def serial_latency(args, model_dir, image, work):
    """{variant: latency summary} of sequential requests to each stack's TorchServe port in turn (the shim left
    out), and of the four functions in-process between them, after --warm-requests to each; each stack's summary
    also has TorchServe's own time outside the handler (handler_gap_ms)."""
    with deployed_side_by_side(LATENCY_VARIANTS, model_dir, work, "latency") as deployed:
        callers = {name: PlainPost(f"{state['endpoint']['backend_url']}/invocations", image, "image/jpeg")
                   for name, (_, state) in deployed.items()}
        predict = in_process_predictor(model_dir)
        callers["the four functions in-process"] = lambda: predict(image)
        for _ in range(args.warm_requests):
            for call in callers.values():
                call()
        figures = interleaved(callers, args.serial_latency)
        for name, (settings, _) in deployed.items():
            figures[name]["handler_gap_ms"] = handler_gap_ms(settings, args.serial_latency)
    return figures


def described(record):
    with urllib.request.urlopen(f"{record['backend_url']}/models/model", timeout=10) as response:
        model = json.loads(response.read())[0]
    return {"workers": len(model["workers"]), "response_timeout_s": model["responseTimeout"]}


def load(url, body, clients, seconds):
    host, port = url.removeprefix("http://").split(":")
    latencies, errors, stop = [], [], time.monotonic() + seconds

    def caller():
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        while time.monotonic() < stop:
            began = time.perf_counter()
            connection.request("POST", "/endpoints/dog-breeds-local/invocations", body=body,
                               headers={"Content-Type": "image/jpeg"})
            response = connection.getresponse()
            response.read()
            (latencies if response.status == 200 else errors).append(time.perf_counter() - began)

    threads = [threading.Thread(target=caller) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"img_s": len(latencies) / (time.monotonic() - started), "errors": len(errors), **summary(latencies)}


def main(args):
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="container-env-", dir=BENCH_DIR))
    model_dir = prepare_model(args, work)
    image = photo_like_jpeg(516, 388)
    results = {"cores": os.cpu_count(), "load_average_at_start": os.getloadavg()[0], "variants": {}}
    print(f"{args.arch} {args.image_size} px, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
          flush=True)
    if args.cpu_per_request:
        return report_cpu_per_request(args, model_dir, image, work, results)
    if args.serial_latency:
        return report_serial_latency(args, model_dir, image, work, results)
    for name, environment in VARIANTS.items():
        settings = LocalSettings(state_dir=BENCH_DIR / "env-state", endpoint_port=free_port("127.0.0.1"),
                                       function_port=free_port("127.0.0.1"), model_dir=model_dir,
                                       archive=work / "model.tar.gz", endpoint_runtime="toolkit",
                                       endpoint_environment=tuple(environment.items()))
        try:
            state = stack.deploy(settings, progress=lambda message: None)
            time.sleep(5)   # every worker loaded
            load(settings.endpoint_url, image, args.clients, 5)   # warm
            figures = {**described(state["endpoint"]), **load(settings.endpoint_url, image, args.clients,
                                                              args.seconds)}
        finally:
            stack.destroy(settings)
        figures["load_average"] = os.getloadavg()[0]
        results["variants"][name] = figures
        print(f"{name}: {figures['workers']} workers, response timeout {figures['response_timeout_s']} s; "
              f"{figures['img_s']:.1f} img/s, p50 {figures['p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms, "
              f"{figures['errors']} errors (load average {figures['load_average']:.1f})", flush=True)
    out = BENCH_DIR / f"container_env_bench-{args.arch}-{args.image_size}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {out}")


def report_cpu_per_request(args, model_dir, image, work, results):
    per_request, in_process = cpu_per_request(args, model_dir, image, work)
    results.pop("variants")
    results.update(requests=args.cpu_per_request, cpu_ms_per_request=per_request,
                   in_process_four_functions_cpu_ms=in_process, load_average_at_end=os.getloadavg()[0])
    for name, kinds in per_request.items():
        print(f"{name}: {sum(kinds.values()):.1f} ms CPU a request (" + ", ".join(
            f"{kind} {ms:.1f}" for kind, ms in sorted(kinds.items())) + ")", flush=True)
    print(f"the four functions in-process: {in_process:.1f} ms; load average {os.getloadavg()[0]:.1f} at the end")
    out = BENCH_DIR / f"container_env_cpu-{args.arch}-{args.image_size}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {out}")


def report_serial_latency(args, model_dir, image, work, results):
    results.pop("variants")
    results.update(requests=args.serial_latency, latency=serial_latency(args, model_dir, image, work),
                   load_average_at_end=os.getloadavg()[0])
    for name, figures in results["latency"].items():
        gap = figures.get("handler_gap_ms")
        print(f"{name}: p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms"
              + (f"; TorchServe outside the handler, median {gap:.2f} ms" if gap is not None else ""), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    out = BENCH_DIR / f"container_env_latency-{args.arch}-{args.image_size}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {out}")


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50", help="untrained model of this arch (default resnet50)")
    parser.add_argument("--image-size", type=at_least(1), default=224, help="default 224")
    parser.add_argument("--clients", type=at_least(1), default=10, help="concurrent callers (default 10)")
    parser.add_argument("--seconds", type=at_least(1, float), default=30, help="measurement per variant (default 30)")
    parser.add_argument("--cpu-per-request", type=at_least(0), default=0,
                        help="instead: CPU per request of CPU_VARIANTS side by side, over this many requests each")
    parser.add_argument("--serial-latency", type=at_least(0), default=0,
                        help="instead: sequential latency at TorchServe's port of LATENCY_VARIANTS side by side, "
                             "over this many requests each")
    parser.add_argument("--warm-requests", type=at_least(0), default=300,
                        help="requests to each stack before --cpu-per-request or --serial-latency counts (the JVM "
                             "compiles meanwhile)")
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
