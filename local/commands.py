"""The local target's commands, the same as aws/commands.py's: deploy, status, destroy, predict, train, models,
approve.

Each prints for the terminal and turns expected failures into invoke's one-line Exit; the work itself is in
stack.py (the stack), stack_common/ (the function's client, shared with AWS), training/ (local_run.py) and
model_registry.py (the MLflow model registry: every local training registers a version; the stack shows the one
it serves).
"""

import time

from invoke.exceptions import Exit

from configuration.areas import TrainSettings, load
from local import model_registry, stack
from local.errors import StackError
from local.servers import COMPONENTS
from local.settings import LocalSettings
from local.supervision import STATE_FILE, read_state, write_state
from stack_common.function_client import local_lambda_client
from stack_common.model_versions import APPROVED, REJECTED, print_versions
from stack_common.predict import predict_through

RUNTIME_NAMES = {"toolkit": "toolkit (AWS's SageMaker PyTorch toolkit on TorchServe, as in the inference image)",
                 "builtin": "builtin (the project's own gunicorn endpoint server)"}


def _progress(message):
    print(f"  {message}", flush=True)


def _ensure_model_function(c):
    """training's "train the quick synthetic model if there is none", called by the stack only when there is no
    model: importing training/local_run.py imports torch, which takes seconds."""
    def ensure_model():
        from training import local_run

        try:
            local_run.ensure_model(c.config, progress=True)
        except local_run.LocalTrainingError as error:
            raise StackError(f"training the model failed: {error}") from None
        _register(c, "local training (invoke deploy, no model yet)")

    return ensure_model


def _register(c, source):
    """Register the model training just wrote as a version pending approval, and say so."""
    try:
        version, new = model_registry.register_trained_model(c.config, source)
    except Exception as error:    # the model is trained and usable: say why it is not registered, go on
        print(f"the model was not registered: {type(error).__name__}: {error}")
        return None
    if version is None:
        print("the model was not registered: its run was not tracked (no \"mlflow\" in metrics.json)")
    elif not new:
        print(f"the same weights are version {version.number} of {model_registry.model_name(c.config)} already "
              f"({version.status})")
    else:
        print(f"registered as version {version.number} of {model_registry.model_name(c.config)}, pending approval "
              f"({model_registry.registry_uri(c.config)}): `invoke models`, `invoke approve {version.number}`")
    return version


def registered_text(c, weights_version):
    """`registered version N (status)` of the model served, or `not registered` (trained before the registry)."""
    try:
        version = model_registry.served_version(c.config, weights_version)
    except Exception as error:
        return f"registry unreadable ({type(error).__name__}: {error})"
    if version is None:
        return "not registered"
    return f"registered version {version.number} of {model_registry.model_name(c.config)} ({version.status})"


def _print_deployed(settings, state, seconds):
    model = state["model"]
    top = (state["smoke_test"]["answer"].get("predictions") or [{}])[0]
    print(f"local stack is up in {seconds:.1f} s: model {model['arch']} "
          f"{model['image_size']} px, {model['num_classes']} classes, version {model['model_version']}, "
          f"{state.get('registered', 'not registered')}")
    print(f"  function  {state['function']['url']}  lambda {settings.function_name}, reserved concurrency "
          f"{settings.reserved_concurrency}, pid {state['function']['pid']}, log {state['function']['log']}")
    endpoint = state["endpoint"]
    print(f"  endpoint  {endpoint['url']}  sagemaker-runtime {settings.endpoint_name}, "
          f"{len(stack.endpoint_workers(endpoint))} workers, pid {endpoint['pid']}, log {endpoint['log']}")
    print(f"  endpoint runtime: {RUNTIME_NAMES[endpoint['runtime']]}")
    print(f"  smoke test through the function: {top.get('class_name')} {100 * top.get('probability', 0):.1f}% "
          f"in {state['smoke_test']['seconds'] * 1000:.0f} ms")
    print("next: invoke predict --image path/to/dog.jpg  |  invoke status  |  invoke destroy")


def deploy(c):
    """Start (or restart) the local stack, training the quick synthetic model first when there is none."""
    settings = LocalSettings.from_config(c.config)
    print(f"deploying the local stack (state in {settings.state_dir})", flush=True)
    started = time.perf_counter()
    try:
        state = stack.deploy(settings, ensure_model=_ensure_model_function(c), progress=_progress)
    except StackError as error:
        raise Exit(f"deploy failed: {error}")
    except KeyboardInterrupt:
        raise Exit("deploy interrupted: everything it had started was stopped")
    state["registered"] = registered_text(c, state["model"].get("model_version"))
    write_state(settings, state)
    _print_deployed(settings, state, time.perf_counter() - started)
    return state


def destroy(c):
    """Stop every process of the local stack."""
    settings = LocalSettings.from_config(c.config)
    stopped = stack.destroy(settings)
    if not stopped:
        print("nothing was running")
    for component, pid in stopped:
        print(f"stopped the {component} (pid {pid})")
    return stopped


def _component_line(component, record):
    health = "healthy" if record.get("healthy") else ("running, not answering" if record.get("alive")
                                                      else "NOT RUNNING")
    extra = ""
    if component == "function" and record.get("live"):
        live = record["live"]
        extra = (f", {live['in_flight']}/{live['reserved_concurrency']} in flight, environments: "
                 f"{live['warm']} warm, {live['busy']} busy, {live['initializing']} starting")
    if component == "endpoint" and record.get("runtime"):
        extra = f", runtime {record['runtime']}"
    return f"  {component:<8}  {health:<22} {record['url']}  pid {record['pid']}{extra}  log {record['log']}"


def status(c):
    """Print what runs locally, where, and which model it serves; returns the stack's state."""
    settings = LocalSettings.from_config(c.config)
    state = stack.status(settings)
    if not state:
        print(f"the local stack is not deployed (no {settings.state_dir / STATE_FILE}): run `invoke deploy`")
        return state
    if state.get("orphans"):
        print("no stack.json, but these servers of this state folder run: "
              + ", ".join(f"{name} pid {pid}" for name, pid in state["orphans"]) + " (`invoke destroy` stops them)")
        return state
    model = state.get("model", {})
    print(f"local stack {state.get('status')} since {state.get('started_at')}: model {model.get('arch')} "
          f"version {model.get('model_version')} ({model.get('num_classes')} classes, {model.get('image_size')} px), "
          f"{state.get('registered', 'not registered')}")
    for component in COMPONENTS:
        record = state.get(component)
        print(_component_line(component, record) if record else f"  {component:<8}  not started")
    return state


def predict(c, url=None, image=None, top_k=5):
    """Ask the local function which breed an image shows; prints the answer and returns its body."""
    def connect():
        settings = LocalSettings.from_config(c.config)
        if not read_state(settings):
            raise Exit("the local stack is not deployed: run `invoke deploy` first")
        return local_lambda_client(settings), settings.function_name

    return predict_through(connect, url=url, image=image, top_k=top_k)


def train(c, workers=1, instances=1, spot=False, fresh=False, assignments=()):
    """Train on this machine (torchrun with `workers` processes) and build model.tar.gz."""
    if int(instances) != 1 or spot:
        raise Exit("--instances and --spot are for SageMaker: add --target aws")
    from training import local_run   # imports torch: seconds, only once there is training to do

    try:
        model_dir = local_run.train_locally(c.config, workers=int(workers), fresh=fresh, assignments=assignments)
    except local_run.LocalTrainingError as error:
        raise Exit(None if error.already_reported else str(error), code=error.exit_code)
    print(f"model directory {model_dir}, archive {load(c, TrainSettings).archive}")
    _register(c, f"local training (invoke train, {int(workers)} worker{'s' if int(workers) > 1 else ''})")
    return model_dir



def models(c):
    """List the local registry's versions, newest first, with metrics, data, source and approval."""
    try:
        found = model_registry.versions(c.config)
    except Exception as error:
        raise Exit(f"cannot read the model registry at {model_registry.registry_uri(c.config)}: "
                   f"{type(error).__name__}: {error}") from None
    print_versions(f"registered model {model_registry.model_name(c.config)} ({model_registry.registry_uri(c.config)})",
                   found)
    return found


def approve(c, version, reject=False, reason=""):
    """Approve (or reject) a local version as git's user.email (else the login name), with a reason."""
    status = REJECTED if reject else APPROVED
    try:
        before, who = model_registry.set_approval(c.config, version, status, reason or "")
    except model_registry.RegistryError as error:
        raise Exit(str(error)) from None
    print(f"version {before.number} of {model_registry.model_name(c.config)}: {before.status} -> {status} by {who}"
          + (f" ({reason})" if reason else ""))
    return status
