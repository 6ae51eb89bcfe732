"""The local endpoint on AWS's own serving stack: the SageMaker PyTorch inference toolkit on TorchServe (Java).

This process plays the image's `serve` entrypoint (dockerd-entrypoint.py / torchserve-entrypoint.py): it unpacks
model.tar.gz into $SAGEMAKER_BASE_DIR/model, sets SAGEMAKER_MODEL_SERVER_WORKERS to the CPU count as the image does,
and calls `sagemaker_pytorch_serving_container.serving.main()`, which writes the TorchServe config, pip-installs
code/requirements.txt and runs `torchserve --start`; TorchServe's Java frontend then starts one Python worker per
model worker, each running the toolkit's handler service and our inference.py. An archive whose requirements.txt
names a package is refused before anything starts: the image installs it into its own throwaway environment, here
that environment is the project's venv. The container environment comes
from the stack (terraform/modules/endpoint's, see local/servers.py); what only a local run needs is set here:
TorchServe's addresses on 127.0.0.1 (TS_* variables, which the toolkit's config lets override its own) and its
temporary folder (its pid file and the workers' sockets live there).

A container has its own /etc and its own process table; this machine's are shared by every endpoint that runs at
once (a test session's and a deploy's, several developers'). The toolkit relies on both: it writes its config to
the fixed /etc/sagemaker-ts.properties (two starts at once would read each other's ports, and it needs root) and
refuses to run when it sees any other TorchServe frontend on the machine. Those two machine-wide look-ups are
pointed at this endpoint's own config file and own frontend; everything else runs as shipped.

In front of TorchServe, the thin SageMaker Runtime shim (`--shim`, a child process): local/sagemaker_runtime.py's
routes on the endpoint port, forwarding body, Content-Type, Accept and the custom attributes header unchanged (a
body over TorchServe's TS_MAX_REQUEST_SIZE included: TorchServe answers it), and answering /ping only once a
TorchServe worker has loaded the model (TorchServe's own /ping says healthy before).
"""

import argparse
import http.client
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from local.ports import free_port

logger = logging.getLogger("local.toolkit_endpoint")

MODEL_NAME = "model"                  # the toolkit registers the single model under this name
FORWARDED_HEADERS = ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes")   # what SageMaker passes on
SHIM_THREADS = 32                     # concurrent callers the shim holds; TorchServe queues what its workers can't run
BACKEND_TIMEOUT_S = 75                # above TorchServe's response timeout (the container environment's, 60 s)
MIN_JAVA = 11                         # TorchServe 0.12's frontend


def java_major_version(java="java"):
    """The major version of `java` on PATH (or $JAVA_HOME/bin/java), None when there is none."""
    if os.environ.get("JAVA_HOME"):
        java = str(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        return None
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    return minor if major == 1 else major    # "1.8.0" is Java 8


def toolkit_installed():
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("sagemaker_pytorch_serving_container", "ts"))


# ------------------------------------------------------------------------------------------------ the shim

class Backend:
    """TorchServe's inference (and management) address, one kept-alive connection per shim thread.

    TorchServe closes the connection after every error answer; a request that finds its kept-alive connection
    closed is sent once more on a new one (it never reached a worker).
    """

    def __init__(self, host, port):
        self.host, self.port = host, port
        self._local = threading.local()

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(self.host, self.port,
                                                                             timeout=BACKEND_TIMEOUT_S)
        return connection

    def request(self, method, path, body=None, headers=None):
        """(status, body, content type); OSError when TorchServe does not answer."""
        for attempt in (1, 2):
            reused = getattr(self._local, "connection", None) is not None
            connection = self._connection()
            try:
                connection.request(method, path, body=body, headers=headers or {})
                response = connection.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError) as error:
                connection.close()
                self._local.connection = None
                stale = isinstance(error, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                if stale and reused and attempt == 1:
                    continue
                raise error if isinstance(error, OSError) else ConnectionError(str(error)) from error
            if response.will_close:
                connection.close()
                self._local.connection = None
            return response.status, data, response.getheader("Content-Type")
        raise AssertionError("unreachable")

    def ready_workers(self):
        """How many of the model's workers have loaded it (READY), 0 when TorchServe does not answer."""
        try:
            status, body, _ = self.request("GET", f"/models/{MODEL_NAME}")
        except OSError:
            return 0
        if status != 200:
            return 0
        try:
            return sum(worker.get("status") == "READY" for model in json.loads(body) for worker in model["workers"])
        except (ValueError, KeyError, TypeError):
            return 0


def run_shim(args):
    from local.gunicorn_app import KeepAliveThreadWorker, exit_master_now, exit_worker_now, run_gunicorn
    from local.sagemaker_runtime import create_front

    def factory():
        backend = Backend(args.host, args.backend_port)

        def invoke(body, content_type, accept, environ):
            headers = {"Content-Type": content_type or "", "Accept": accept or ""}
            attributes = environ.get("HTTP_X_AMZN_SAGEMAKER_CUSTOM_ATTRIBUTES")
            if attributes is not None:
                headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
            headers = {name: value for name, value in headers.items() if value}
            try:
                return backend.request("POST", "/invocations", body=body, headers=headers)
            except OSError as error:
                logger.error("TorchServe did not answer: %s", error)
                return 503, json.dumps({"code": 503, "type": "ServiceUnavailable",
                                        "message": "the model server did not answer"}), "application/json"

        return create_front(invoke, lambda: backend.ready_workers() > 0, args.endpoint_name, region=args.region,
                            log_path=args.log_path)   # TorchServe answers its own body limit

    run_gunicorn(factory, {
        "bind": f"{args.host}:{args.port}",
        "workers": 1,
        "worker_class": KeepAliveThreadWorker,
        "threads": SHIM_THREADS,
        "keepalive": 60,
        "timeout": BACKEND_TIMEOUT_S + 5,
        "graceful_timeout": 30,
        "errorlog": "-",
        "proc_name": f"endpoint-shim-{args.endpoint_name}",
        "worker_exit": exit_worker_now,
        "on_exit": exit_master_now,
    })


# ------------------------------------------------------------------------------------------ the entrypoint

def _own_frontend(config_file):
    """The toolkit's `_retrieve_ts_server_process`, limited to the frontend started with this endpoint's config."""
    import psutil
    from retrying import retry

    @retry(stop_max_delay=10 * 1000)
    def retrieve():
        for process in psutil.process_iter():
            try:
                if process.status() != psutil.STATUS_ZOMBIE and config_file in process.cmdline():
                    if "org.pytorch.serve.ModelServer" in process.cmdline():
                        return process
            except psutil.Error:
                continue
        raise RuntimeError("TorchServe was not started")

    return retrieve


def work_dir_of(base_dir):
    """The working folder of the endpoint whose --base-dir is `base_dir`: TorchServe's config, pid file, sockets,
    model store and logs."""
    return Path(base_dir).resolve() / "work"


def logs_dir(base_dir):
    """TorchServe's log folder (LOG_LOCATION and METRICS_LOCATION) of the endpoint whose --base-dir is `base_dir`."""
    return work_dir_of(base_dir) / "logs"


def requirements_named(model_dir):
    """The requirement lines of the model's code/requirements.txt (comments and blank lines are not)."""
    path = Path(model_dir) / "code" / "requirements.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def serve(args):
    """Unpack the model, start the shim, run the toolkit's serving.main() until TorchServe stops."""
    from local.endpoint_server import unpack_model_archive

    base_dir = Path(args.base_dir).resolve()
    work_dir = work_dir_of(base_dir)   # the previous endpoint of this state folder has stopped: its pid file goes
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    model_dir = unpack_model_archive(args.archive, base_dir / "model")
    logger.info("unpacked %s into %s", args.archive, model_dir)
    packages = requirements_named(model_dir)
    if packages:
        raise SystemExit(f"{args.archive} has code/requirements.txt naming {', '.join(packages)}: the SageMaker "
                         "image pip-installs it at each start into its own environment, which here would be the "
                         "project's venv; install them with the project's requirements instead")

    backend = f"http://{args.host}:{args.backend_port}"
    os.environ.update({
        "SAGEMAKER_BASE_DIR": str(base_dir),
        "SAGEMAKER_BIND_TO_PORT": str(args.backend_port),
        "TS_INFERENCE_ADDRESS": backend,
        "TS_MANAGEMENT_ADDRESS": backend,
        "TS_METRICS_ADDRESS": f"http://{args.host}:{free_port(args.host)}",
        "TS_GRPC_INFERENCE_ADDRESS": args.host, "TS_GRPC_INFERENCE_PORT": str(free_port(args.host)),
        "TS_GRPC_MANAGEMENT_ADDRESS": args.host, "TS_GRPC_MANAGEMENT_PORT": str(free_port(args.host)),
        "TMPDIR": str(work_dir), "TEMP": str(work_dir),
        "LOG_LOCATION": str(logs_dir(base_dir)), "METRICS_LOCATION": str(logs_dir(base_dir)),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),  # `torchserve`
    })
    shim = subprocess.Popen([sys.executable, "-m", "local.toolkit_endpoint", "--shim", *sys.argv[1:]])

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)   # until the toolkit installs its own (it forwards SIGTERM to TorchServe)
    try:
        os.chdir(work_dir)   # the toolkit's model store is under the working directory
        os.environ["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(multiprocessing.cpu_count())   # what the image's does
        from sagemaker_pytorch_serving_container import serving, torchserve

        torchserve.TS_CONFIG_FILE = str(work_dir / "sagemaker-ts.properties")
        torchserve._retrieve_ts_server_process = _own_frontend(torchserve.TS_CONFIG_FILE)
        serving.main()
    finally:
        shim.terminate()
        shim.wait()


def get_args_parser():
    parser = argparse.ArgumentParser(description="Serve model.tar.gz on the SageMaker toolkit and TorchServe.")
    parser.add_argument("--archive", required=True, help="model.tar.gz to serve")
    parser.add_argument("--base-dir", required=True,
                        help="SAGEMAKER_BASE_DIR: the model is unpacked into its model/ (replaced; like /opt/ml)")
    parser.add_argument("--endpoint-name", default="dog-breeds-local", help="default: dog-breeds-local")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="the shim's port (default 8080)")
    parser.add_argument("--backend-port", type=int, required=True, help="TorchServe's inference port")
    parser.add_argument("--region", default="us-east-1", help="region named in error ARNs (default us-east-1)")
    parser.add_argument("--log-path", default="the endpoint log", help="log file named in ModelError messages")
    parser.add_argument("--shim", action="store_true", help="run the SageMaker Runtime shim (started by serve)")
    return parser


def main(args):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    if args.shim:
        run_shim(args)
    else:
        serve(args)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
