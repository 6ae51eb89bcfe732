"""The local stack's two servers, endpoint and function: which program each runs, its command line and environment,
starting it in its own process group with its log in the state folder, and asking it whether it is healthy."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from local.errors import StackError
from local.function_settings import terraform_function
from local.ports import free_port
from local.settings import REPO_ROOT
from local.toolkit_endpoint import MIN_JAVA, java_major_version, toolkit_installed

COMPONENTS = ("endpoint", "function")
SERVER_MODULES = {"endpoint": "local.endpoint_server", "function": "local.function_server"}
ENDPOINT_RUNTIMES = {"toolkit": "local.toolkit_endpoint", "builtin": "local.endpoint_server"}
# What the stack runs besides our servers: TorchServe's CLI, its Java frontend and its Python workers. Their command
# lines name the state folder too (the config file, the workers' sockets), and the frontend is not a group leader.
TORCHSERVE_PROGRAMS = ("torchserve", "org.pytorch.serve.ModelServer", "ts/model_service_worker.py")
# The inference container's environment, as Terraform's endpoint module sets it on SageMaker (merged there with
# SAGEMAKER_REGION and the module's `environment` variable): the local endpoint runs with the same.
CONTAINER_ENVIRONMENT_FILE = REPO_ROOT / "terraform/modules/endpoint/container_environment.json"
HEALTH_PATHS = {"endpoint": "/ping", "function": "/local/status"}
LOG_TAIL_LINES = 25


def container_environment(settings):
    """The endpoint module's container environment, with SAGEMAKER_REGION and local.endpoint_environment merged
    as Terraform merges the region and the module's `environment` variable."""
    return {**json.loads(CONTAINER_ENVIRONMENT_FILE.read_text()), "SAGEMAKER_REGION": settings.region,
            **dict(settings.endpoint_environment)}


def function_environment(settings):
    """The function's own variables: what Terraform's environment block sets, the SageMaker Runtime endpoint pointed
    at the local endpoint through botocore's standard per-service variable, and dummy keys (on Lambda, the role's)."""
    variables = {**terraform_function().environment(settings.endpoint_name),
                 "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": settings.endpoint_url,
                 "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
    for name in ("ENDPOINT_READ_TIMEOUT_S", "ENDPOINT_CONNECT_TIMEOUT_S"):
        if os.environ.get(name):
            variables[name] = os.environ[name]
    return variables


def endpoint_runtime(settings):
    """(runtime, why): which server the endpoint runs on, from local.endpoint_runtime and what is installed."""
    wanted = settings.endpoint_runtime     # one of toolkit, builtin, auto: the settings area checks it
    if wanted == "builtin":
        return "builtin", "local.endpoint_runtime is builtin"
    java = java_major_version()
    missing = ("the SageMaker toolkit and TorchServe are not installed (run .ci/setup)" if not toolkit_installed()
               else f"no Java {MIN_JAVA} or newer" if not java or java < MIN_JAVA else None)
    if missing is None:
        return "toolkit", f"Java {java}"
    if wanted == "toolkit":
        raise StackError(f"local.endpoint_runtime is toolkit but {missing}: install it or set it to auto")
    return "builtin", missing


def _without_aws_variables(env):
    for name in [key for key in env if key.startswith("AWS_")]:
        del env[name]
    return env


def server_environment(settings, component):
    env = _without_aws_variables(dict(os.environ))
    env["PYTHONUNBUFFERED"] = "1"
    if component == "endpoint":
        env.update(container_environment(settings))
        env["IMAGE_FETCH_ALLOW_NETWORKS"] = settings.url_allow_networks
        env["IMAGE_FETCH_READ_TIMEOUT_S"] = str(settings.image_fetch_timeout_s)
        for name in ("IMAGE_FETCH_CONNECT_TIMEOUT_S", "IMAGE_FETCH_MAX_BYTES"):
            if os.environ.get(name):
                env[name] = os.environ[name]
    return env


def toolkit_base_dir(settings):
    """SAGEMAKER_BASE_DIR of the toolkit runtime's endpoint (its model/ and TorchServe's work/ folder)."""
    return Path(settings.state_dir).resolve() / "endpoint-toolkit"


def _endpoint_command(settings, runtime, backend_port):
    state_dir = Path(settings.state_dir).resolve()
    if runtime == "toolkit":   # TorchServe applies the container environment's TS_MAX_REQUEST_SIZE itself
        where = ["--base-dir", str(toolkit_base_dir(settings)), "--backend-port", str(backend_port)]
    else:
        where = ["--model-dir", str(state_dir / "endpoint-model"), "--workers", str(settings.endpoint_workers),
                 "--max-request-bytes", container_environment(settings)["TS_MAX_REQUEST_SIZE"]]
    return [sys.executable, "-m", ENDPOINT_RUNTIMES[runtime], "--archive", str(settings.archive), *where,
            "--endpoint-name", settings.endpoint_name, "--host", settings.host, "--port", str(settings.endpoint_port),
            "--region", settings.region, "--log-path", str(state_dir / "endpoint.log")]


def _function_command(settings):
    state_dir = Path(settings.state_dir).resolve()
    command = [sys.executable, "-m", SERVER_MODULES["function"], "--zip", str(settings.function_zip),
               "--function-dir", str(state_dir / "function"), "--function-name", settings.function_name,
               "--host", settings.host, "--port", str(settings.function_port),
               "--reserved-concurrency", str(settings.reserved_concurrency), "--region", settings.region]
    for name, value in function_environment(settings).items():
        command += ["--env", f"{name}={value}"]
    return command


def start(settings, component, runtime=None):
    """Start one server in its own session, its output appended to <state_dir>/<component>.log; returns its record
    for stack.json (pid, port, url, log, and the endpoint's runtime and TorchServe's own URL)."""
    log_path = Path(settings.state_dir) / f"{component}.log"
    with open(log_path, "ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {component}\n".encode())
        log.flush()
        backend_port = free_port(settings.host) if runtime == "toolkit" else None   # TorchServe's own port
        command = (_endpoint_command(settings, runtime, backend_port) if component == "endpoint"
                   else _function_command(settings))
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=server_environment(settings, component),
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    port = settings.endpoint_port if component == "endpoint" else settings.function_port
    url = settings.endpoint_url if component == "endpoint" else settings.function_url
    record = {"pid": process.pid, "port": port, "url": url, "log": str(log_path)}
    if runtime:
        record["runtime"] = runtime
    if backend_port:
        record["backend_url"] = f"http://{settings.host}:{backend_port}"
    return record


def log_tail(path, lines=LOG_TAIL_LINES):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def healthy(record, component):
    """True when the server of `record` answers its health check with 200."""
    try:
        with urllib.request.urlopen(record["url"] + HEALTH_PATHS[component], timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
