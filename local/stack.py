"""The local stack behind `invoke deploy/status/destroy` (target local): endpoint and function as background processes.

Everything it starts is recorded in one state folder (local.state_dir, default .state/): stack.json (pids, ports,
model), endpoint.log, function.log, the unpacked model (endpoint-model/, like /opt/ml/model) and function
(function/, like /var/task). Each server runs in its own process group, so stopping it stops its workers too.
The pids are written before anything waits, so a deploy interrupted half-way leaves a record the next deploy or
destroy uses to stop what was started; processes whose command line names this state folder are found and
stopped even when stack.json is gone.
"""

import base64
import io
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from local.function_zip import DEFAULT_FUNCTION_ZIP, build_function_zip, source_code_hash

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = "stack.json"
COMPONENTS = ("endpoint", "function")
SERVER_MODULES = {"endpoint": "local.endpoint_server", "function": "local.function_server"}
ENDPOINT_RUNTIMES = {"toolkit": "local.toolkit_endpoint", "builtin": "local.endpoint_server"}
# The inference container's environment, as Terraform's endpoint module sets it on SageMaker (merged there with
# SAGEMAKER_REGION and the module's `environment` variable): the local endpoint runs with the same.
CONTAINER_ENVIRONMENT_FILE = REPO_ROOT / "terraform/modules/endpoint/container_environment.json"
STOP_TIMEOUT_S = 35          # gunicorn's graceful timeout is 30 s
LOG_TAIL_LINES = 25


class StackError(RuntimeError):
    """An expected failure; the message is one line that says what to do."""


@dataclass(frozen=True)
class LocalSettings:
    state_dir: Path
    host: str = "127.0.0.1"
    endpoint_port: int = 8080
    function_port: int = 9001
    endpoint_runtime: str = "auto"       # toolkit | builtin | auto (toolkit where Java >= 11 is installed)
    endpoint_workers: int = 2            # the builtin runtime's; the toolkit's are the image's: one per CPU
    reserved_concurrency: int = 10
    endpoint_name: str = "dog-breeds-local"
    function_name: str = "dog-breeds-local"
    region: str = "us-east-1"
    model_dir: Path = REPO_ROOT / "build/model"
    archive: Path = REPO_ROOT / "build/model.tar.gz"
    function_zip: Path = DEFAULT_FUNCTION_ZIP
    url_allow_networks: str = ""
    image_fetch_timeout_s: float = 10.0
    start_timeout_s: float = 180.0
    # More container environment, merged over the module's as Terraform's endpoint `environment` variable is:
    # ((name, value), ...), e.g. (("OMP_NUM_THREADS", "2"),)
    endpoint_environment: tuple = ()

    @classmethod
    def from_config(cls, config):
        """Settings from invoke's config (invoke.yaml, INVOKE_* variables): the local and train sections."""
        local = config.get("local", {}) or {}
        train = config.get("train", {}) or {}
        aws = config.get("aws", {}) or {}

        def path(value, default):
            chosen = Path(value or default)
            return chosen if chosen.is_absolute() else REPO_ROOT / chosen

        defaults = cls(state_dir=REPO_ROOT / ".state")
        return cls(
            state_dir=path(local.get("state_dir"), ".state"),
            host=str(local.get("host") or defaults.host),
            endpoint_port=int(local.get("endpoint_port") or defaults.endpoint_port),
            function_port=int(local.get("function_port") or defaults.function_port),
            endpoint_runtime=str(local.get("endpoint_runtime") or defaults.endpoint_runtime),
            endpoint_workers=int(local.get("endpoint_workers") or defaults.endpoint_workers),
            reserved_concurrency=int(local.get("reserved_concurrency") or defaults.reserved_concurrency),
            endpoint_name=str(local.get("endpoint_name") or defaults.endpoint_name),
            function_name=str(local.get("function_name") or defaults.function_name),
            region=str(aws.get("region") or defaults.region),
            model_dir=path(train.get("model_dir"), "build/model"),
            archive=path(train.get("archive"), "build/model.tar.gz"),
            url_allow_networks=str(local.get("url_allow_networks") or ""),
            image_fetch_timeout_s=float(local.get("image_fetch_timeout_s") or defaults.image_fetch_timeout_s),
            start_timeout_s=float(local.get("start_timeout_s") or defaults.start_timeout_s),
            endpoint_environment=tuple((str(name), str(value))
                                       for name, value in (local.get("endpoint_environment") or {}).items()),
        )

    @property
    def endpoint_url(self):
        return f"http://{self.host}:{self.endpoint_port}"

    @property
    def function_url(self):
        return f"http://{self.host}:{self.function_port}"


# --------------------------------------------------------------------------------------------------- state file

def _state_path(settings):
    return Path(settings.state_dir) / STATE_FILE


def read_state(settings):
    try:
        return json.loads(_state_path(settings).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_state(settings, state):
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ processes

def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None


def _is_our_server(pid, component, settings):
    """True when `pid` runs our server for this state folder (not a recycled pid of something else)."""
    modules = ENDPOINT_RUNTIMES.values() if component == "endpoint" else (SERVER_MODULES[component],)
    cmdline = _cmdline(pid)
    if cmdline is None:   # no /proc (not Linux): trust the record if the pid exists
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    text = b" ".join(cmdline).decode(errors="replace")
    return any(module in text for module in modules) and str(Path(settings.state_dir).resolve()) in text


def _group_alive(pgid):
    """True while a process of the group runs. Zombies do not count: once deploy's invoke process has exited,
    the servers' parent is the init process, which may take seconds to collect their exit status."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path("/proc").is_dir() or bool(group_processes(pgid))


def group_processes(pgid):
    """Live pids of a process group (a server with everything it started: workers, TorchServe's Java frontend)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":   # fields after the name: state, ppid, pgrp
            found.append(int(stat.parent.name))
    return sorted(found)


def endpoint_workers(record):
    """{pid: model loaded} of the endpoint's model workers, from its stack.json record.

    Builtin: the gunicorn master's worker processes, loaded once their line is in the log. Toolkit: TorchServe's
    Python workers as its management API describes them, loaded when READY.
    """
    if record.get("runtime") == "toolkit":
        try:
            with urllib.request.urlopen(f"{record['backend_url']}/models/model", timeout=5) as response:
                described = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        return {int(worker["pid"]): worker["status"] == "READY" for model in described
                for worker in model.get("workers", []) if worker.get("pid")}
    log = Path(record["log"]).read_text(errors="replace") if Path(record["log"]).exists() else ""
    master = record["pid"]
    return {pid: f"worker {pid} loaded the model" in log for pid in group_processes(master)
            if pid != master and _parent(pid) == master}


def _parent(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _orphans(settings):
    """(component, pid) of our servers for this state folder that stack.json does not know about."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        for component in COMPONENTS:
            try:
                leader = os.getpgid(pid) == pid    # the gunicorn master; its workers are in its group
            except ProcessLookupError:
                continue
            if leader and pid != os.getpid() and _is_our_server(pid, component, settings):
                found.append((component, pid))
    return found


def _stop_groups(pgids, timeout_s=STOP_TIMEOUT_S):
    """SIGTERM each gunicorn master (it stops its workers after their in-flight requests, as on SageMaker);
    SIGKILL whatever is left of the process groups after timeout_s.

    The signal goes to the master only: a worker killed first would be replaced by the master before it
    handles its own SIGTERM, which makes the shutdown seconds longer.
    """
    for pgid in pgids:
        try:
            os.kill(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pgid in pgids:
            _reap(pgid)
        if not any(_group_alive(pgid) for pgid in pgids):
            return
        time.sleep(0.05)
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while any(_group_alive(pgid) for pgid in pgids):
        for pgid in pgids:
            _reap(pgid)
        time.sleep(0.05)


def _reap(pid):
    """Collect the exit status when we are the parent (deploy in this process), so no zombie keeps the pid."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# What the stack runs besides our servers: TorchServe's CLI, its Java frontend and its Python workers. Their command
# lines name the state folder too (the config file, the workers' sockets), and the frontend is not a group leader.
TORCHSERVE_PROGRAMS = ("torchserve", "org.pytorch.serve.ModelServer", "ts/model_service_worker.py")


def stack_processes(settings):
    """Live pids of every process of this state folder's stack, whichever process group it is in."""
    state_dir = str(Path(settings.state_dir).resolve())
    programs = (*SERVER_MODULES.values(), *ENDPOINT_RUNTIMES.values(), *TORCHSERVE_PROGRAMS)
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        text = b" ".join(_cmdline(entry.name) or ()).decode(errors="replace")
        if state_dir in text and any(program in text for program in programs) and int(entry.name) != os.getpid() \
                and _state_of(entry.name) not in (None, "Z"):
            found.append(int(entry.name))
    return sorted(found)


def _state_of(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _stop_stragglers(settings, timeout_s=STOP_TIMEOUT_S):
    """SIGTERM, then SIGKILL after timeout_s, each process of the stack the stop of its groups left, until none is left.

    A group is stopped through its leader, found by its command line: a group whose leader had already exited
    (a server that failed during start, once its children outlive it) is found by no one, and nothing else
    signals or waits for its other members.
    A scan of /proc misses a child forked after it listed /proc by a parent that exited before it was read (as
    TorchServe's CLI starts the Java frontend and exits): the scan after an empty one sees it.
    """
    while (left := stack_processes(settings)) or (left := stack_processes(settings)):
        for pid in left:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(_state_of(pid) not in (None, "Z") for pid in left):
            for pid in left:
                _reap(pid)
            time.sleep(0.05)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while any(_state_of(pid) not in (None, "Z") for pid in left):
            for pid in left:
                _reap(pid)
            time.sleep(0.05)


def stop_all(settings):
    """Stop every process of the stack (recorded or orphaned) and forget them; returns what was stopped.
    Returns only once no process of the stack is left."""
    state = read_state(settings)
    stopped = []
    for component in COMPONENTS:
        record = state.get(component) or {}
        pid = record.get("pid")
        if pid and _is_our_server(pid, component, settings):
            stopped.append((component, pid))
    if Path("/proc").is_dir():
        stopped.extend(orphan for orphan in _orphans(settings) if orphan not in stopped)
    _stop_groups([pid for _component, pid in stopped])
    if Path("/proc").is_dir():
        _stop_stragglers(settings)
    _state_path(settings).unlink(missing_ok=True)
    return stopped


def _port_free(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return True
        except OSError:
            return False


def _clean_aws_environment(env):
    for name in [key for key in env if key.startswith("AWS_")]:
        del env[name]
    return env


def _server_environment(settings, component):
    env = _clean_aws_environment(dict(os.environ))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if component == "endpoint":
        env.update(container_environment(settings))
        env["IMAGE_FETCH_ALLOW_NETWORKS"] = settings.url_allow_networks
        env["IMAGE_FETCH_READ_TIMEOUT_S"] = str(settings.image_fetch_timeout_s)
        for name in ("IMAGE_FETCH_CONNECT_TIMEOUT_S", "IMAGE_FETCH_MAX_BYTES"):
            if os.environ.get(name):
                env[name] = os.environ[name]
    return env


def container_environment(settings):
    """The endpoint module's container environment, with SAGEMAKER_REGION and local.endpoint_environment merged
    as Terraform merges the region and the module's `environment` variable."""
    return {**json.loads(CONTAINER_ENVIRONMENT_FILE.read_text()), "SAGEMAKER_REGION": settings.region,
            **dict(settings.endpoint_environment)}


def endpoint_runtime(settings):
    """(runtime, why): which server the endpoint runs on, from local.endpoint_runtime and what is installed."""
    from local.toolkit_endpoint import MIN_JAVA, java_major_version, toolkit_installed

    wanted = settings.endpoint_runtime
    if wanted not in ("toolkit", "builtin", "auto"):
        raise StackError(f"local.endpoint_runtime is {wanted!r}: use toolkit, builtin or auto")
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


def _server_command(settings, component, runtime=None, backend_port=None):
    state_dir = Path(settings.state_dir).resolve()
    if component == "endpoint" and runtime == "toolkit":
        return [sys.executable, "-m", ENDPOINT_RUNTIMES["toolkit"], "--archive", str(settings.archive),
                "--base-dir", str(state_dir / "endpoint-toolkit"), "--endpoint-name", settings.endpoint_name,
                "--host", settings.host, "--port", str(settings.endpoint_port),
                "--backend-port", str(backend_port),
                "--region", settings.region, "--log-path", str(state_dir / "endpoint.log")]
    if component == "endpoint":
        return [sys.executable, "-m", ENDPOINT_RUNTIMES["builtin"], "--archive", str(settings.archive),
                "--model-dir", str(state_dir / "endpoint-model"), "--endpoint-name", settings.endpoint_name,
                "--host", settings.host, "--port", str(settings.endpoint_port),
                "--workers", str(settings.endpoint_workers),
                "--max-request-bytes", container_environment(settings)["TS_MAX_REQUEST_SIZE"],
                "--region", settings.region, "--log-path", str(state_dir / "endpoint.log")]
    command = [sys.executable, "-m", SERVER_MODULES[component], "--zip", str(settings.function_zip),
               "--function-dir", str(state_dir / "function"), "--function-name", settings.function_name,
               "--host", settings.host, "--port", str(settings.function_port),
               "--reserved-concurrency", str(settings.reserved_concurrency), "--region", settings.region]
    for name, value in function_environment(settings).items():
        command += ["--env", f"{name}={value}"]
    return command


def function_environment(settings):
    """The function's own variables: what Terraform's environment block sets, the SageMaker Runtime endpoint pointed
    at the local endpoint through botocore's standard per-service variable, and dummy keys (on Lambda, the role's)."""
    from local.function_settings import terraform_function

    variables = {**terraform_function().environment(settings.endpoint_name),
                 "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": settings.endpoint_url,
                 "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
    for name in ("ENDPOINT_READ_TIMEOUT_S", "ENDPOINT_CONNECT_TIMEOUT_S"):
        if os.environ.get(name):
            variables[name] = os.environ[name]
    return variables


def free_port(host):
    """A port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _start(settings, component, runtime=None):
    log_path = Path(settings.state_dir) / f"{component}.log"
    with open(log_path, "ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {component}\n".encode())
        log.flush()
        backend_port = free_port(settings.host) if runtime == "toolkit" else None   # TorchServe's own port
        process = subprocess.Popen(_server_command(settings, component, runtime, backend_port), cwd=REPO_ROOT,
                                   env=_server_environment(settings, component), stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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


def _healthy(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


HEALTH_PATHS = {"endpoint": "/ping", "function": "/local/status"}


def _wait_healthy(settings, state, timeout_s, progress):
    deadline = time.monotonic() + timeout_s
    pending = list(COMPONENTS)
    while pending:
        for component in list(pending):
            record = state[component]
            _reap(record["pid"])
            if not _group_alive(record["pid"]) or not _is_our_server(record["pid"], component, settings):
                raise StackError(f"the {component} process exited during start; last lines of {record['log']}:\n"
                                 f"{log_tail(record['log'])}")
            if _healthy(record["url"] + HEALTH_PATHS[component]):
                pending.remove(component)
                progress(f"{component} is healthy at {record['url']}")
        if pending and time.monotonic() > deadline:
            component = pending[0]
            raise StackError(f"the {component} did not become healthy within {timeout_s:.0f} s; last lines of "
                             f"{state[component]['log']}:\n{log_tail(state[component]['log'])}")
        if pending:
            time.sleep(0.1)


# ---------------------------------------------------------------------------------------------------- model

def _code_is_current(model_dir):
    """True when the model's code/ holds exactly the current inference/*.py."""
    inference_dir = REPO_ROOT / "inference"
    code_dir = Path(model_dir) / "code"
    sources = {p.name: p.read_bytes() for p in inference_dir.glob("*.py")}
    served = {p.name: p.read_bytes() for p in code_dir.glob("*.py")}
    return sources == served


def prepare_model_archive(settings, ensure_model=None, progress=print):
    """Make sure a model exists (training it if needed), its code/ is current, and model.tar.gz matches it."""
    model_dir = Path(settings.model_dir)
    if not (model_dir / "model_config.json").exists():
        if ensure_model is None:
            raise StackError(f"no model in {model_dir}: run `invoke train` first")
        progress(f"no model in {model_dir}: training the quick synthetic model first")
        ensure_model()
        if not (model_dir / "model_config.json").exists():
            raise StackError(f"training finished but {model_dir} still has no model_config.json")
    if not _code_is_current(model_dir):
        progress(f"refreshing {model_dir / 'code'} from inference/")
        _model_archive().copy_inference_code(model_dir / "code")
    archive = Path(settings.archive)
    newest = max(p.stat().st_mtime for p in model_dir.rglob("*") if p.is_file())
    if not archive.exists() or archive.stat().st_mtime < newest:
        progress(f"building {archive}")
        _model_archive().build_model_archive(model_dir, archive)
    return json.loads((model_dir / "model_config.json").read_text())


def _model_archive():
    """training/model_archive.py, imported only when there is something to build (it imports torch: seconds)."""
    sys.path[:0] = [p for p in (str(REPO_ROOT / "training"), str(REPO_ROOT / "inference")) if p not in sys.path]
    import model_archive

    return model_archive


# ------------------------------------------------------------------------------------------------ smoke test

def smoke_image():
    """A small JPEG any model can classify: what the smoke test and the load test send."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (120, 160, 90))
    ImageDraw.Draw(image).ellipse((90, 50, 230, 190), fill=(200, 60, 50))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def smoke_test(settings):
    """One prediction through the function; returns (answer, seconds) or raises StackError."""
    from local.function_client import invoke_function, local_lambda_client

    client = local_lambda_client(settings)
    started = time.perf_counter()
    answer = invoke_function(client, settings.function_name,
                             {"image": base64.b64encode(smoke_image()).decode(), "top_k": 3})
    elapsed = time.perf_counter() - started
    if answer.status != 200:
        raise StackError(f"smoke test failed: the function answered {answer.status}: {answer.body}")
    return answer, elapsed


# ---------------------------------------------------------------------------------------------------- tasks

def deploy(settings, ensure_model=None, progress=print):
    """(Re)start the local stack; returns the state written to stack.json."""
    for network in filter(None, (part.strip() for part in settings.url_allow_networks.split(","))):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise StackError(f"local.url_allow_networks: {network!r} is not an address or CIDR "
                             "(e.g. 127.0.0.1/32)") from None
    runtime, why = endpoint_runtime(settings)
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    config = prepare_model_archive(settings, ensure_model, progress)
    progress(f"building {settings.function_zip}")
    build_function_zip(settings.function_zip)

    replaced = stop_all(settings)
    if replaced:
        progress("stopped the previous stack: " + ", ".join(f"{name} (pid {pid})" for name, pid in replaced))
    for component, port in (("endpoint", settings.endpoint_port), ("function", settings.function_port)):
        if not _port_free(settings.host, port):
            raise StackError(f"port {port} on {settings.host} is in use by another program: free it or set "
                             f"local.{component}_port (INVOKE_LOCAL_{component.upper()}_PORT)")

    progress(f"endpoint runtime: {runtime} ({why})")
    state = {"status": "starting", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "settings": {key: str(value) for key, value in asdict(settings).items()},
             "model": {key: config.get(key) for key in ("arch", "num_classes", "image_size", "model_version",
                                                         "weights", "mode")},
             "archive": str(settings.archive), "function_zip": str(settings.function_zip),
             "function_code_sha256": source_code_hash(settings.function_zip)}
    try:
        for component in COMPONENTS:
            progress(f"starting the {component} on port {settings.endpoint_port if component == 'endpoint' else settings.function_port}")
            state[component] = _start(settings, component, runtime if component == "endpoint" else None)
            _write_state(settings, state)    # recorded before any wait: an interrupted deploy can be cleaned up
        _wait_healthy(settings, state, settings.start_timeout_s, progress)
        answer, elapsed = smoke_test(settings)
    except BaseException:
        stop_all(settings)
        raise
    state["status"] = "running"
    state["smoke_test"] = {"seconds": round(elapsed, 3), "answer": answer.body}
    _write_state(settings, state)
    return state


def destroy(settings):
    """Stop everything deploy started; returns [(component, pid)] stopped."""
    return stop_all(settings)


def status(settings):
    """What runs: per component pid, url, alive, healthy; plus the model. Empty dict when nothing was deployed."""
    state = read_state(settings)
    if not state:
        orphans = _orphans(settings) if Path("/proc").is_dir() else []
        return {"status": "stopped", "orphans": orphans} if orphans else {}
    for component in COMPONENTS:
        record = state.get(component)
        if not record:
            continue
        alive = _is_our_server(record["pid"], component, settings) and _group_alive(record["pid"])
        record["alive"] = alive
        record["healthy"] = alive and _healthy(record["url"] + HEALTH_PATHS[component])
    function = state.get("function") or {}
    if function.get("healthy"):
        try:
            with urllib.request.urlopen(function["url"] + HEALTH_PATHS["function"], timeout=2) as response:
                function["live"] = json.loads(response.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError):
            pass
    return state
