"""The local target's commands, the same five as aws/commands.py's: deploy, status, destroy, predict, train.

Each prints for the terminal and turns expected failures into invoke's one-line Exit; the work itself is in
stack.py (the stack), stack_common/ (the function's client, shared with AWS) and training/ (local_run.py).
"""

import time

from invoke.exceptions import Exit

from configuration.areas import TrainSettings, load
from local import stack
from local.errors import StackError
from local.servers import COMPONENTS
from local.settings import LocalSettings
from local.supervision import STATE_FILE, read_state
from stack_common.function_client import local_lambda_client
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

    return ensure_model


def _print_deployed(settings, state, seconds):
    model = state["model"]
    top = (state["smoke_test"]["answer"].get("predictions") or [{}])[0]
    print(f"local stack is up in {seconds:.1f} s: model {model['arch']} "
          f"{model['image_size']} px, {model['num_classes']} classes, version {model['model_version']}")
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
          f"version {model.get('model_version')} ({model.get('num_classes')} classes, {model.get('image_size')} px)")
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
    return model_dir


def models(c):
    """List the local registry's model versions (the MLflow model registry of the project's tracking store)."""
    raise Exit("the local model registry needs the MLflow tracking store, which is not in this checkout yet: "
               "use --target aws")


def approve(c, version, reject=False, reason=""):
    """Approve (or reject) a local model version."""
    return models(c)
