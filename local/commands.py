"""What the deploy/predict/status/destroy tasks do on the local target (and predict on both): printing and
turning expected failures into invoke's one-line Exit. The work itself is in stack.py and function_client.py."""

import importlib
import sys
import time

import botocore.config
import botocore.exceptions
from invoke.exceptions import Exit

from local import stack
from local.function_client import (PredictRequestError, build_event, describe_failure, format_predictions,
                                   invoke_function, local_lambda_client)


RUNTIME_NAMES = {"toolkit": "toolkit (AWS's SageMaker PyTorch toolkit on TorchServe, as in the inference image)",
                 "builtin": "builtin (the project's own gunicorn endpoint server)"}


def _progress(message):
    print(f"  {message}", flush=True)


def _ensure_model_function(c):
    """training's "train the quick synthetic model if there is none" (training/local_run.py), called by the stack
    only when there is no model: importing it imports torch, which takes seconds."""
    def ensure_model():
        sys.path[:0] = [p for p in (str(stack.REPO_ROOT / "training"), str(stack.REPO_ROOT / "inference"))
                        if p not in sys.path]
        local_run = importlib.import_module("local_run")
        try:
            local_run.ensure_model(c.config, progress=True)
        except local_run.LocalTrainingError as error:
            raise stack.StackError(f"training the model failed: {error}") from None

    return ensure_model


def deploy(c):
    settings = stack.LocalSettings.from_config(c.config)
    print(f"deploying the local stack (state in {settings.state_dir})", flush=True)
    started = time.perf_counter()
    try:
        state = stack.deploy(settings, ensure_model=_ensure_model_function(c), progress=_progress)
    except stack.StackError as error:
        raise Exit(f"deploy failed: {error}")
    except KeyboardInterrupt:
        raise Exit("deploy interrupted: everything it had started was stopped")
    model = state["model"]
    smoke = state["smoke_test"]
    top = (smoke["answer"].get("predictions") or [{}])[0]
    print(f"local stack is up in {time.perf_counter() - started:.1f} s: model {model['arch']} "
          f"{model['image_size']} px, {model['num_classes']} classes, version {model['model_version']}")
    print(f"  function  {state['function']['url']}  lambda {settings.function_name}, reserved concurrency "
          f"{settings.reserved_concurrency}, pid {state['function']['pid']}, log {state['function']['log']}")
    endpoint = state["endpoint"]
    print(f"  endpoint  {endpoint['url']}  sagemaker-runtime {settings.endpoint_name}, "
          f"{len(stack.endpoint_workers(endpoint))} workers, pid {endpoint['pid']}, log {endpoint['log']}")
    print(f"  endpoint runtime: {RUNTIME_NAMES[endpoint['runtime']]}")
    print(f"  smoke test through the function: {top.get('class_name')} {100 * top.get('probability', 0):.1f}% "
          f"in {smoke['seconds'] * 1000:.0f} ms")
    print("next: invoke predict --image path/to/dog.jpg  |  invoke status  |  invoke destroy")
    return state


def destroy(c):
    settings = stack.LocalSettings.from_config(c.config)
    stopped = stack.destroy(settings)
    if not stopped:
        print("nothing was running")
    for component, pid in stopped:
        print(f"stopped the {component} (pid {pid})")
    return stopped


def status(c):
    settings = stack.LocalSettings.from_config(c.config)
    state = stack.status(settings)
    if not state:
        print(f"the local stack is not deployed (no {settings.state_dir / stack.STATE_FILE}): run `invoke deploy`")
        return state
    if state.get("orphans"):
        print("no stack.json, but these servers of this state folder run: "
              + ", ".join(f"{name} pid {pid}" for name, pid in state["orphans"]) + " (`invoke destroy` stops them)")
        return state
    model = state.get("model", {})
    print(f"local stack {state.get('status')} since {state.get('started_at')}: model {model.get('arch')} "
          f"version {model.get('model_version')} ({model.get('num_classes')} classes, {model.get('image_size')} px)")
    for component in stack.COMPONENTS:
        record = state.get(component)
        if not record:
            print(f"  {component:<8}  not started")
            continue
        health = "healthy" if record.get("healthy") else ("running, not answering" if record.get("alive")
                                                          else "NOT RUNNING")
        extra = ""
        if component == "function" and record.get("live"):
            live = record["live"]
            extra = (f", {live['in_flight']}/{live['reserved_concurrency']} in flight, environments: "
                     f"{live['warm']} warm, {live['busy']} busy, {live['initializing']} starting")
        if component == "endpoint" and record.get("runtime"):
            extra = f", runtime {record['runtime']}"
        print(f"  {component:<8}  {health:<22} {record['url']}  pid {record['pid']}{extra}  log {record['log']}")
    return state


def _lambda_target(c, target):
    if target == "aws":
        from aws import deployment, session   # the AWS engineer's module; only needed for this target

        client = session.boto_session(c).client("lambda", config=botocore.config.Config(
            connect_timeout=5, read_timeout=120, retries={"mode": "standard", "total_max_attempts": 3}))
        return client, deployment.function_name(c)
    settings = stack.LocalSettings.from_config(c.config)
    if not stack.read_state(settings):
        raise Exit("the local stack is not deployed: run `invoke deploy` first")
    return local_lambda_client(settings), settings.function_name


def predict(c, target, url=None, image=None, top_k=5):
    try:
        event = build_event(url=url, image=image, top_k=top_k)
    except (PredictRequestError, ValueError) as error:
        raise Exit(f"predict: {error}")
    client, function_name = _lambda_target(c, target)
    try:
        answer = invoke_function(client, function_name, event)
    except botocore.exceptions.EndpointConnectionError:
        raise Exit(f"predict: nothing answers at {client.meta.endpoint_url}: is the stack running? "
                   "(`invoke status`, `invoke deploy`)")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        raise Exit(f"predict: calling function {function_name} failed: {error}")
    if answer.status != 200:
        raise Exit(f"predict: {describe_failure(answer)}")
    for line in format_predictions(answer.body):
        print(line)
    return answer.body
