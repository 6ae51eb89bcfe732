"""What the container environment does on the toolkit runtime (the SageMaker toolkit on TorchServe, as in the image).

For each variant of the environment terraform/modules/endpoint sets, deploys the local stack on the toolkit runtime
(state in build/bench/, free ports), reads TorchServe's own view of the model (workers, response timeout) from its
management API, and measures images/s and latency with --clients concurrent InvokeEndpoint callers (plain HTTP,
kept-alive connections) for --seconds. Figures go to build/bench/container_env_bench-<arch>-<size>.json.

    .venv/bin/python bench/container_env_bench.py --arch resnet50 --image-size 224
"""

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "training"), str(REPO_ROOT / "inference"), str(REPO_ROOT / "bench")]

from local import stack  # noqa: E402
from serve_bench import BENCH_DIR, photo_like_jpeg, prepare_model, summary  # noqa: E402

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
    for name, environment in VARIANTS.items():
        settings = stack.LocalSettings(state_dir=BENCH_DIR / "env-state", endpoint_port=stack.free_port("127.0.0.1"),
                                       function_port=stack.free_port("127.0.0.1"), model_dir=model_dir,
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


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50", help="untrained model of this arch (default resnet50)")
    parser.add_argument("--image-size", type=int, default=224, help="default 224")
    parser.add_argument("--clients", type=int, default=10, help="concurrent callers (default 10)")
    parser.add_argument("--seconds", type=float, default=30, help="measurement per variant (default 30)")
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
