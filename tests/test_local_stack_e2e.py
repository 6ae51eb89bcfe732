"""`invoke deploy` on the local target, end to end: real processes, real boto3 clients, the real CLI.

One stack is deployed for the module, serving the model that training's own code wrote (conftest's trained_model_dir:
ResNet-18, 32 px, 3 classes), so the training -> model.tar.gz -> serving contract is exercised too. Images come
from a loopback server, which the endpoint may reach only because the test deploys with the allow-list
local.url_allow_networks=127.0.0.1/32.
"""

import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.loopback_servers import ImageServer
from local import stack
from local.ports import free_port
from local.procfs import processes_naming
from local.servers import COMPONENTS
from local.settings import LocalSettings
from local.supervision import read_state
from serving_testlib import image_bytes

REPO_ROOT = Path(__file__).resolve().parent.parent
INVOKE = str(Path(sys.executable).parent / "invoke")
FETCH_TIMEOUT_S = 5


def invoke(env, *args, timeout=300, check=True):
    result = subprocess.run([INVOKE, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check:
        assert result.returncode == 0, f"invoke {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def processes_of(state_dir):
    """pids of every live process whose command line names the state folder (our servers and their workers)."""
    return processes_naming(str(state_dir))


def wait_for(condition, timeout_s, message):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(message)


@pytest.fixture(scope="module")
def images():
    with ImageServer() as server:
        server.image("/dog.jpg", image_bytes(size=(320, 240)))
        server.image("/dog.png", image_bytes(size=(320, 240), fmt="PNG"), "image/png")
        server.image("/notes.txt", b"just some text, not an image", "text/plain")
        server.image("/bomb.png", image_bytes(size=(9000, 9000), mode="L", fmt="PNG"), "image/png")
        server.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/iam/")
        yield server


@pytest.fixture(scope="module")
def stack_root(tmp_path_factory):
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="module")
def class_names(trained_model_dir):
    return json.loads((trained_model_dir / "model_config.json").read_text())["class_names"]


REGISTERED_MODEL = "dog-breeds-e2e"


@pytest.fixture(scope="module")
def env(stack_root, trained_model_dir):
    from local import model_registry

    # The served model is a version of the session's MLflow store (MLFLOW_TRACKING_URI), as `invoke train` leaves it.
    model_registry.register_trained_model({"train": {"model_dir": str(trained_model_dir),
                                                     "output_dir": str(trained_model_dir.parent / "output")},
                                           "tracking": {"experiment": REGISTERED_MODEL}})
    variables = dict(os.environ)
    variables.update({
        "INVOKE_TARGET": "local",
        "INVOKE_TRACKING_EXPERIMENT": REGISTERED_MODEL,
        "INVOKE_TRAIN_MODEL_DIR": str(trained_model_dir),
        "INVOKE_TRAIN_ARCHIVE": str(trained_model_dir.parent / "model.tar.gz"),
        "INVOKE_LOCAL_STATE_DIR": str(stack_root / "state"),
        "INVOKE_LOCAL_ENDPOINT_PORT": str(free_port()),
        "INVOKE_LOCAL_FUNCTION_PORT": str(free_port()),
        "INVOKE_LOCAL_URL_ALLOW_NETWORKS": "127.0.0.1/32",
        "INVOKE_LOCAL_IMAGE_FETCH_TIMEOUT_S": str(FETCH_TIMEOUT_S),
        "INVOKE_LOCAL_ENDPOINT_RUNTIME": "toolkit",   # as SageMaker serves; fail rather than fall back without Java
    })
    return variables


@pytest.fixture(scope="module")
def settings(env, stack_root):
    return LocalSettings(state_dir=stack_root / "state", endpoint_port=int(env["INVOKE_LOCAL_ENDPOINT_PORT"]),
                         function_port=int(env["INVOKE_LOCAL_FUNCTION_PORT"]))


class StackUnderTest:
    """The module's stack. Any test may stop it or leave it half-started; the next test that needs it running
    deploys it again, so no test depends on which ran before it."""

    def __init__(self, env, settings):
        self.env, self.settings = env, settings
        self.deploy_output = None

    def deploy(self):
        """`invoke deploy`; its output is what the running stack was deployed with."""
        self.deploy_output = None
        self.deploy_output = invoke(self.env, "deploy").stdout
        return self.deploy_output

    def running(self):
        state = stack.status(self.settings)
        return (self.deploy_output is not None and state.get("status") == "running"
                and all(state.get(component, {}).get("healthy") for component in COMPONENTS))

    def up(self):
        if not self.running():
            self.deploy()
        return self.deploy_output


@pytest.fixture(scope="module")
def stack_under_test(env, settings):
    under_test = StackUnderTest(env, settings)
    yield under_test
    invoke(env, "destroy", check=False)


@pytest.fixture
def deployed(stack_under_test):
    """A running stack (deployed again if an earlier test stopped it); the output of the deploy that started it."""
    return stack_under_test.up()


def client(service, url):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test",
                        config=Config(read_timeout=70, retries={"total_max_attempts": 1}, max_pool_connections=20))


@pytest.fixture
def function(deployed, settings):
    return client("lambda", settings.function_url)


@pytest.fixture
def endpoint(deployed, settings):
    return client("sagemaker-runtime", settings.endpoint_url)


def call(function, event, name="dog-breeds-local"):
    response = function.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    assert response["StatusCode"] == 200 and response["ExecutedVersion"] == "$LATEST"
    answer = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, answer
    assert answer["headers"] == {"Content-Type": "application/json"}
    return answer["statusCode"], json.loads(answer["body"])


def state_of(settings):
    return json.loads((settings.state_dir / "stack.json").read_text())


def test_deploy_starts_both_servers_and_answers_through_the_function(deployed, settings):
    assert "local stack is up" in deployed and "smoke test through the function" in deployed
    assert f"registered version 1 of {REGISTERED_MODEL} (PendingManualApproval)" in deployed
    state = state_of(settings)
    assert state["status"] == "running"
    running = processes_of(settings.state_dir)
    for component in COMPONENTS:
        assert state[component]["pid"] in running, f"the {component} server is not running"
        assert Path(state[component]["log"]).exists()
    assert state["endpoint"]["pid"] != state["function"]["pid"]
    expected = os.cpu_count() if state["endpoint"]["runtime"] == "toolkit" else settings.endpoint_workers
    # /ping, and so deploy, is healthy once one worker has the model; the rest load meanwhile.
    wait_for(lambda: len(stack.endpoint_workers(state["endpoint"])) == expected
             and all(stack.endpoint_workers(state["endpoint"]).values()), 60,
             f"the endpoint never had {expected} workers with the model loaded")   # toolkit: one per CPU, as the image


def test_invoke_status_shows_what_runs_where_and_which_model(deployed, env, settings):
    output = invoke(env, "status").stdout
    model_version = json.loads((Path(env["INVOKE_TRAIN_MODEL_DIR"]) / "model_config.json").read_text())[
        "model_version"]
    assert model_version in output
    assert f"{model_version} (3 classes, 32 px), registered version 1 of {REGISTERED_MODEL}" in output
    assert output.count("healthy") == 2
    assert settings.endpoint_url in output and settings.function_url in output
    assert str(state_of(settings)["endpoint"]["pid"]) in output
    assert re.search(r"environments: [1-9]\d* warm, 0 busy", output), output   # the smoke test's, kept warm


def test_the_original_url_event_gets_top_k_breeds(function, images, class_names):
    status, body = call(function, {"url": images.url("/dog.jpg"), "top_k": 2})
    assert status == 200
    assert [p["class_name"] in class_names for p in body["predictions"]] == [True, True]
    assert body["model_version"]


def test_invoke_predict_by_file_and_by_url(deployed, env, images, tmp_path, class_names):
    picture = tmp_path / "dog.png"
    picture.write_bytes(image_bytes(size=(300, 200), fmt="PNG"))
    by_file = invoke(env, "predict", "--image", str(picture), "--top-k", "2").stdout
    assert len([line for line in by_file.splitlines() if line.strip()[:2] in ("1.", "2.")]) == 2
    assert "%" in by_file and "model version" in by_file
    by_url = invoke(env, "predict", "--url", images.url("/dog.png")).stdout
    assert all(name in by_url for name in class_names)


def test_invoke_predict_failures_are_one_line(deployed, env, images):
    refused = invoke(env, "predict", "--url", images.url("/notes.txt"), check=False)
    assert refused.returncode != 0
    assert refused.stderr.strip().count("\n") == 0 and "422" in refused.stderr
    missing = invoke(env, "predict", "--image", "/no/such/dog.jpg", check=False)
    assert missing.returncode != 0 and "no such image file" in missing.stderr


def test_sagemaker_runtime_client_works_against_the_endpoint(endpoint):
    response = endpoint.invoke_endpoint(EndpointName="dog-breeds-local", Body=image_bytes(), ContentType="image/jpeg",
                                        Accept="application/json", CustomAttributes="top_k=1")
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["ContentType"] == "application/json"
    assert len(json.loads(response["Body"].read())["predictions"]) == 1


@pytest.mark.parametrize("body, content_type, status, code", [
    (b"plain text", "text/plain", 415, "UnsupportedMediaType"),
    (b"not an image", "image/jpeg", 422, "NotAnImage"),
    (b"{broken", "application/json", 400, "BadRequest"),
])
def test_container_errors_reach_boto3_as_model_error_with_the_original_status(endpoint, body, content_type,
                                                                            status, code):
    with pytest.raises(endpoint.exceptions.ModelError) as raised:
        endpoint.invoke_endpoint(EndpointName="dog-breeds-local", Body=body, ContentType=content_type)
    response = raised.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == status
    assert json.loads(response["OriginalMessage"])["error"] == code
    assert response["LogStreamArn"].startswith("arn:aws:logs:")


def test_an_unknown_endpoint_name_is_a_validation_error(endpoint):
    with pytest.raises(ClientError) as raised:
        endpoint.invoke_endpoint(EndpointName="no-such-endpoint", Body=image_bytes(), ContentType="image/jpeg")
    assert raised.value.response["Error"]["Code"] == "ValidationError"


def test_both_servers_answer_several_invocations_on_one_kept_alive_connection(settings, deployed, class_names):
    """Keep-alive on both hops (what the function's and the caller's botocore pools rely on), bodies read whole."""
    image = image_bytes(size=(320, 240))
    event = json.dumps({"image": base64.b64encode(image).decode()}).encode()
    for port, path, body, content_type in (
            (settings.endpoint_port, "/endpoints/dog-breeds-local/invocations", image, "image/jpeg"),
            (settings.function_port, "/2015-03-31/functions/dog-breeds-local/invocations", event,
             "application/json")):
        connection = http.client.HTTPConnection(settings.host, port, timeout=30)
        sockets = []
        for _ in range(3):
            connection.request("POST", path, body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            answer = json.loads(response.read())
            assert response.status == 200 and not response.will_close, (path, answer)
            sockets.append(connection.sock)
        assert sockets[0] is sockets[1] is sockets[2], f"{path}: a new connection per request"
        connection.close()


@pytest.mark.parametrize("server, method, path, status", [
    ("endpoint", "GET", "/endpoints/dog-breeds-local/invocations", 405),
    ("endpoint", "POST", "/ping", 405),
    ("endpoint", "GET", "/no/such/route", 404),
    ("function", "GET", "/2015-03-31/functions/dog-breeds-local/invocations", 405),
    ("function", "POST", "/no/such/route", 404),
])
def test_unknown_routes_and_methods_get_a_json_error(settings, deployed, server, method, path, status):
    url = settings.endpoint_url if server == "endpoint" else settings.function_url
    request = urllib.request.Request(url + path, method=method, data=b"{}" if method == "POST" else None)
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == status
    assert json.loads(raised.value.read())["message"]


def test_a_chunked_request_body_reaches_the_model_whole(settings, deployed, class_names):
    connection = http.client.HTTPConnection(settings.host, settings.endpoint_port, timeout=30)
    image = image_bytes(size=(320, 240))
    chunks = (image[i:i + 1000] for i in range(0, len(image), 1000))
    connection.request("POST", "/invocations", body=chunks, encode_chunked=True,
                       headers={"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 200, answer
    assert {prediction["class_name"] for prediction in answer["predictions"]} <= set(class_names)


@pytest.mark.parametrize("event_for, status, code", [
    (lambda images: {"picture": "dog.jpg"}, 400, "BadRequest"),
    (lambda images: {"url": images.url("/dog.jpg"), "top_k": 0}, 400, "BadRequest"),
    (lambda images: {"url": images.url("/bomb.png")}, 413, "PayloadTooLarge"),
    (lambda images: {"image": base64.b64encode(image_bytes(size=(9000, 9000), mode="L", fmt="PNG")).decode()},
     413, "PayloadTooLarge"),
    (lambda images: {"url": images.url("/notes.txt")}, 422, "NotAnImage"),
    (lambda images: {"image": base64.b64encode(b"GIF89a but then nothing").decode()}, 422, "NotAnImage"),
    (lambda images: {"url": "http://169.254.169.254/latest/meta-data/"}, 422, "UrlRefused"),
    (lambda images: {"url": images.url("/to-metadata")}, 422, "UrlRefused"),
    (lambda images: {"url": images.url("/missing.jpg")}, 422, "UrlRefused"),
    (lambda images: {"url": images.url("/hang/dog.jpg")}, 504, "UpstreamTimeout"),
])
def test_every_error_status_through_the_function(function, images, event_for, status, code):
    answer_status, body = call(function, event_for(images))
    assert (answer_status, body["error"]) == (status, code)
    assert body["message"] and "Traceback" not in body["message"]


def test_lambda_invoke_api_errors_are_the_ones_boto3_knows(function):
    with pytest.raises(function.exceptions.ResourceNotFoundException):
        function.invoke(FunctionName="another-function", Payload=b"{}")
    with pytest.raises(function.exceptions.InvalidRequestContentException):
        function.invoke(FunctionName="dog-breeds-local", Payload=b"{not json")
    assert function.invoke(FunctionName="dog-breeds-local", InvocationType="DryRun")["StatusCode"] == 204


def test_the_eleventh_concurrent_invocation_is_throttled_at_once(function, images, settings):
    images.gate.clear()
    event = {"url": images.url("/gated/dog.jpg")}
    results = []
    callers = [threading.Thread(target=lambda: results.append(call(function, event)[0])) for _ in range(10)]
    for caller in callers:
        caller.start()

    def in_flight():
        with urllib.request.urlopen(settings.function_url + "/local/status", timeout=5) as response:
            return json.loads(response.read())["in_flight"] == 10

    try:
        wait_for(in_flight, 30, "the 10 gated invocations never were all in flight")
        started = time.monotonic()
        with pytest.raises(function.exceptions.TooManyRequestsException) as raised:
            function.invoke(FunctionName="dog-breeds-local", Payload=json.dumps(event).encode())
        assert time.monotonic() - started < 2
        error = raised.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert error["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    finally:
        images.gate.set()
        for caller in callers:
            caller.join(timeout=120)
    assert results == [200] * 10


def test_ping_is_unhealthy_while_no_worker_has_the_model_and_healthy_again_once_one_has(settings, deployed):
    record = state_of(settings)["endpoint"]
    workers = stack.endpoint_workers(record)
    assert record["runtime"] == "toolkit" and len(workers) >= 1 and all(workers.values())
    for pid in workers:
        os.kill(pid, signal.SIGKILL)

    def ping():
        try:
            with urllib.request.urlopen(settings.endpoint_url + "/ping", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    # TorchServe's own /ping would say healthy while its new workers are still importing and in model_fn
    wait_for(lambda: ping() == 503, 30, "/ping stayed healthy with every worker dead")
    wait_for(lambda: ping() == 200, 90, "/ping did not become healthy again")
    assert any(stack.endpoint_workers(record).values())
    wait_for(lambda: len(stack.endpoint_workers(record)) == len(workers)
             and all(stack.endpoint_workers(record).values()), 90, "not every worker came back")


def test_a_killed_endpoint_worker_is_replaced(function, images, settings):
    record = state_of(settings)["endpoint"]
    workers = stack.endpoint_workers(record)
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    answers = []
    for _ in range(4):
        status, body = call(function, {"url": images.url("/dog.jpg")})
        answers.append((status, None if status == 200 else body.get("error")))
    # TorchServe notices a dead worker when it hands it the next job: that one request fails (507 "Worker died.",
    # a 502 through the function), as it would on SageMaker. Gunicorn's master notices at once.
    failures = [answer for answer in answers if answer != (200, None)]
    assert len(failures) <= (1 if record["runtime"] == "toolkit" else 0), answers
    assert set(failures) <= {(502, "ModelError")}, answers

    def replaced():
        now = stack.endpoint_workers(record)
        return len(now) == len(workers) and victim not in now and all(now.values())

    wait_for(replaced, 60, "the killed worker was not replaced by one with the model loaded")


def test_deploy_again_replaces_what_runs(stack_under_test, settings, function, images):
    before = state_of(settings)
    old_pids = processes_of(settings.state_dir)
    stack_under_test.deploy()
    after = state_of(settings)
    assert after["endpoint"]["pid"] != before["endpoint"]["pid"]
    assert after["function"]["pid"] != before["function"]["pid"]
    assert not set(old_pids) & set(processes_of(settings.state_dir))
    assert call(function, {"url": images.url("/dog.jpg")})[0] == 200


def function_environments(settings):
    """pids of the function's execution environments (awslambdaric processes), as /local/status lists them."""
    with urllib.request.urlopen(settings.function_url + "/local/status", timeout=5) as response:
        return [environment["pid"] for environment in json.loads(response.read())["environments"]]


def test_destroy_stops_everything(deployed, env, settings, function, images):
    assert call(function, {"url": images.url("/dog.jpg")})[0] == 200
    environments = function_environments(settings)
    assert environments
    output = invoke(env, "destroy").stdout
    assert not [pid for pid in environments if Path(f"/proc/{pid}").exists()], "an environment outlived destroy"
    assert "stopped the endpoint" in output and "stopped the function" in output
    assert processes_of(settings.state_dir) == []
    assert "not deployed" in invoke(env, "status").stdout
    assert "nothing was running" in invoke(env, "destroy").stdout


def test_a_deploy_killed_half_way_is_cleaned_up_by_destroy(env, settings):
    # Whatever ran before (a stack, or nothing): the new deploy replaces it, and its own record is waited for.
    before = read_state(settings).get("function", {}).get("pid")
    deploying = subprocess.Popen([INVOKE, "deploy"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: read_state(settings).get("function", {}).get("pid") not in (None, before), 120,
                 "deploy never recorded its processes")
    finally:
        deploying.kill()
        deploying.wait()
    assert processes_of(settings.state_dir), "the servers should outlive the killed deploy"
    output = invoke(env, "destroy").stdout
    assert "stopped the endpoint" in output
    assert processes_of(settings.state_dir) == []


def test_a_server_that_cannot_start_fails_deploy_with_its_log_and_leaves_nothing(env, settings, stack_root):
    broken = stack_root / "broken.tar.gz"
    broken.write_bytes(b"this is not a model archive")
    result = invoke({**env, "INVOKE_TRAIN_ARCHIVE": str(broken)}, "deploy", check=False)
    assert result.returncode != 0
    assert "deploy failed: the endpoint process exited during start" in result.stderr
    assert "endpoint.log" in result.stderr
    assert processes_of(settings.state_dir) == []
