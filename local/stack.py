"""The local stack behind `invoke deploy/status/destroy` (target local): endpoint and function as background processes.

Everything it starts is recorded in one state folder (local.state_dir, default .state/): stack.json (pids, ports,
model), endpoint.log, function.log, the unpacked model (endpoint-model/, like /opt/ml/model) and function
(function/, like /var/task). Each server runs in its own process group, so stopping it stops its workers too.
The pieces: settings.py (LocalSettings), servers.py (what each server runs and how it starts), supervision.py
(stack.json, finding and stopping the processes), and stack_common/ (the function's zip, client and smoke test,
shared with the AWS target). This module puts them in order.
"""

import ipaddress
import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

from local import procfs, servers, supervision
from local.errors import StackError
from local.ports import port_free
from stack_common import model_check
from stack_common.function_client import local_lambda_client
from stack_common.function_zip import build_function_zip, source_code_hash
from stack_common.smoke_test import SmokeTestFailed, run_smoke_test

MODEL_FIELDS = ("arch", "num_classes", "image_size", "model_version", "weights", "mode")


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
    return {pid: f"worker {pid} loaded the model" in log for pid in procfs.children(master)}


def prepare_model_archive(settings, ensure_model=None, progress=print):
    """Make sure a model exists (training it if needed), its code/ is current, and model.tar.gz matches it;
    returns its model_config.json."""
    model_dir = Path(settings.model_dir)
    if not model_check.has_config(model_dir):
        if ensure_model is None:
            raise StackError(f"no model in {model_dir}: run `invoke train` first")
        progress(f"no model in {model_dir}: training the quick synthetic model first")
        ensure_model()
        if not model_check.has_config(model_dir):
            raise StackError(f"training finished but {model_dir} still has no model_config.json")
    if not model_check.code_is_current(model_dir):
        progress(f"refreshing {model_dir / 'code'} from inference/")
        _model_archive().copy_inference_code(model_dir / "code")
    if not model_check.archive_is_current(model_dir, settings.archive):
        progress(f"building {settings.archive}")
        _model_archive().build_model_archive(model_dir, settings.archive)
    return model_check.read_config(model_dir)


def _model_archive():
    """training/model_archive.py, imported only when there is something to build (it imports torch: seconds)."""
    from training import model_archive

    return model_archive


def _check_allow_networks(settings):
    for network in filter(None, (part.strip() for part in settings.url_allow_networks.split(","))):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise StackError(f"local.url_allow_networks: {network!r} is not an address or CIDR "
                             "(e.g. 127.0.0.1/32)") from None


def _check_ports(settings):
    for component, port in (("endpoint", settings.endpoint_port), ("function", settings.function_port)):
        if not port_free(settings.host, port):
            raise StackError(f"port {port} on {settings.host} is in use by another program: free it or set "
                             f"local.{component}_port (INVOKE_LOCAL_{component.upper()}_PORT)")


def _wait_healthy(settings, state, timeout_s, progress):
    deadline = time.monotonic() + timeout_s
    pending = list(servers.COMPONENTS)
    while pending:
        for component in list(pending):
            record = state[component]
            supervision.reap(record["pid"])
            if not supervision.group_alive(record["pid"]) or \
                    not supervision.is_our_server(record["pid"], component, settings):
                raise StackError(f"the {component} process exited during start; last lines of {record['log']}:\n"
                                 f"{servers.log_tail(record['log'])}")
            if servers.healthy(record, component):
                pending.remove(component)
                progress(f"{component} is healthy at {record['url']}")
        if pending and time.monotonic() > deadline:
            log = state[pending[0]]["log"]
            raise StackError(f"the {pending[0]} did not become healthy within {timeout_s:.0f} s; last lines of "
                             f"{log}:\n{servers.log_tail(log)}")
        if pending:
            time.sleep(0.1)


def _start_and_check(settings, state, runtime, progress):
    """Start both servers (each recorded before any wait), wait until healthy, smoke-test through the function."""
    for component in servers.COMPONENTS:
        port = settings.endpoint_port if component == "endpoint" else settings.function_port
        progress(f"starting the {component} on port {port}")
        state[component] = servers.start(settings, component, runtime if component == "endpoint" else None)
        supervision.write_state(settings, state)    # recorded before any wait: an interrupted deploy can be cleaned up
    _wait_healthy(settings, state, settings.start_timeout_s, progress)
    try:
        return run_smoke_test(local_lambda_client(settings), settings.function_name)
    except SmokeTestFailed as error:
        raise StackError(str(error)) from None


def deploy(settings, ensure_model=None, progress=print):
    """(Re)start the local stack; returns the state written to stack.json."""
    _check_allow_networks(settings)
    runtime, why = servers.endpoint_runtime(settings)
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    config = prepare_model_archive(settings, ensure_model, progress)
    progress(f"building {settings.function_zip}")
    build_function_zip(settings.function_zip)

    replaced = supervision.stop_all(settings)
    if replaced:
        progress("stopped the previous stack: " + ", ".join(f"{name} (pid {pid})" for name, pid in replaced))
    _check_ports(settings)

    progress(f"endpoint runtime: {runtime} ({why})")
    state = {"status": "starting", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "settings": {key: str(value) for key, value in asdict(settings).items()},
             "model": {key: config.get(key) for key in MODEL_FIELDS},
             "archive": str(settings.archive), "function_zip": str(settings.function_zip),
             "function_code_sha256": source_code_hash(settings.function_zip)}
    try:
        answer, elapsed = _start_and_check(settings, state, runtime, progress)
    except BaseException:
        supervision.stop_all(settings)
        raise
    state["status"] = "running"
    state["smoke_test"] = {"seconds": round(elapsed, 3), "answer": answer.body}
    supervision.write_state(settings, state)
    return state


def destroy(settings):
    """Stop everything deploy started; returns [(component, pid)] stopped."""
    return supervision.stop_all(settings)


def status(settings):
    """What runs: per component pid, url, alive, healthy; plus the model. Empty dict when nothing was deployed."""
    state = supervision.read_state(settings)
    if not state:
        orphans = supervision.orphans(settings)
        return {"status": "stopped", "orphans": orphans} if orphans else {}
    for component in servers.COMPONENTS:
        record = state.get(component)
        if not record:
            continue
        alive = supervision.is_our_server(record["pid"], component, settings) and \
            supervision.group_alive(record["pid"])
        record["alive"] = alive
        record["healthy"] = alive and servers.healthy(record, component)
    function = state.get("function") or {}
    if function.get("healthy"):
        try:
            with urllib.request.urlopen(function["url"] + servers.HEALTH_PATHS["function"], timeout=2) as response:
                function["live"] = json.loads(response.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError):
            pass
    return state
