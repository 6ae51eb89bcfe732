"""The same requests to the endpoint on both runtimes get the same answers: status, error code, body, probabilities.

The session's stack (conftest's local_stack) serves on the toolkit runtime, AWS's SageMaker toolkit on TorchServe;
this module deploys the same model on the builtin runtime next to it and sends each request to both, through
boto3's sagemaker-runtime client (InvokeEndpoint) and to the container's own /invocations and /ping.
"""

import base64
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from inference import MAX_REQUEST_BYTES
from inference_errors import InternalServerError
from local import stack
from local.endpoint_server import ModelHost, create_app
from local.ports import free_port
from local.sagemaker_runtime import INVOKE_ENDPOINT_MAX_BYTES
from local.servers import container_environment
from local.settings import REPO_ROOT, LocalSettings
from local.supervision import read_state
from local.toolkit_endpoint import requirements_named
from serving_testlib import decompression_bomb, image_bytes, png_header_only

JPEG = image_bytes(size=(320, 240), color=(200, 120, 40))
PNG = image_bytes(size=(100, 80), fmt="PNG", color=(20, 60, 220))
B64 = base64.b64encode(JPEG).decode()

REQUESTS = [
    ("jpeg", {"Body": JPEG, "ContentType": "image/jpeg"}),
    ("png, JSON Accept", {"Body": PNG, "ContentType": "image/png", "Accept": "application/json"}),
    ("base64 in JSON with top_k", {"Body": json.dumps({"image": B64, "top_k": 2}), "ContentType": "application/json"}),
    ("JSON with a charset", {"Body": json.dumps({"image": B64}), "ContentType": "application/json; charset=utf-8"}),
    ("top_k in the custom attributes", {"Body": JPEG, "ContentType": "image/jpeg", "CustomAttributes": "top_k=1"}),
    ("url", lambda images: {"Body": json.dumps({"url": images.url("/parity.jpg")}), "ContentType": "application/json"}),
    ("url that is not found", lambda images: {"Body": json.dumps({"url": images.url("/missing.jpg")}),
                                              "ContentType": "application/json"}),
    ("url that never answers", lambda images: {"Body": json.dumps({"url": images.url("/hang/dog.jpg")}),
                                               "ContentType": "application/json"}),
    ("JSON body not UTF-8", {"Body": b'{"image": "\xff\xfe"}', "ContentType": "application/json"}),
    ("malformed JSON", {"Body": b'{"image": ', "ContentType": "application/json"}),
    ("JSON without url or image", {"Body": b'{"picture": 1}', "ContentType": "application/json"}),
    ("bad top_k attribute", {"Body": JPEG, "ContentType": "image/jpeg", "CustomAttributes": "top_k=many"}),
    ("unsupported content type", {"Body": JPEG, "ContentType": "text/plain"}),
    ("no content type", {"Body": JPEG}),
    ("unacceptable Accept", {"Body": JPEG, "ContentType": "image/jpeg", "Accept": "image/png"}),
    ("empty body", {"Body": b"", "ContentType": "image/jpeg"}),
    ("not an image", {"Body": b"GIF89a this is not", "ContentType": "image/jpeg"}),
    ("decompression bomb", {"Body": decompression_bomb(), "ContentType": "image/png"}),
    ("declares 20000x20000", {"Body": png_header_only(20000, 20000), "ContentType": "image/png"}),
    ("exactly the size limit", {"Body": b"\xff\xd8" + bytes(MAX_REQUEST_BYTES - 2), "ContentType": "image/jpeg"}),
    ("one byte over the size limit", {"Body": bytes(MAX_REQUEST_BYTES + 1), "ContentType": "image/jpeg"}),
]


@pytest.fixture(scope="module")
def runtimes(local_stack, tmp_path_factory, trained_model_dir):
    """{runtime: (endpoint url, sagemaker-runtime client)} for the session's toolkit stack and a builtin one."""
    root = tmp_path_factory.mktemp("builtin-stack")
    settings = LocalSettings(
        state_dir=root / "state", endpoint_port=free_port(), function_port=free_port(), model_dir=trained_model_dir,
        archive=trained_model_dir.parent / "model.tar.gz", function_zip=root / "function.zip",
        url_allow_networks="127.0.0.1/32", image_fetch_timeout_s=5.0, endpoint_runtime="builtin")
    with mock.patch.dict(os.environ, local_stack.canaries):
        state = stack.deploy(settings, progress=lambda message: None)
    assert state["endpoint"]["runtime"] == "builtin"
    toolkit = read_state(local_stack.settings)["endpoint"]
    assert toolkit["runtime"] == "toolkit"
    local_stack.images.image("/parity.jpg", JPEG)

    def client(url):
        return boto3.client("sagemaker-runtime", endpoint_url=url, region_name=settings.region,
                            aws_access_key_id="test", aws_secret_access_key="test",
                            config=Config(connect_timeout=2, read_timeout=70, retries={"total_max_attempts": 1}))

    try:
        yield SimpleNamespace(images=local_stack.images, endpoints={
            "toolkit": (local_stack.settings.endpoint_url, client(local_stack.settings.endpoint_url)),
            "builtin": (settings.endpoint_url, client(settings.endpoint_url))})
    finally:
        stack.destroy(settings)


def invoke_endpoint(client, request):
    """(status, error code, body) as the caller sees it: the model's own status and body for a ModelError."""
    try:
        response = client.invoke_endpoint(EndpointName="dog-breeds-local", **request)
    except ClientError as error:
        answer = error.response
        if answer["Error"]["Code"] == "ModelError":
            return answer["OriginalStatusCode"], "ModelError", json.loads(answer["OriginalMessage"])
        return answer["ResponseMetadata"]["HTTPStatusCode"], answer["Error"]["Code"], answer["Error"]["Message"]
    assert response["ContentType"] == "application/json"
    return 200, None, json.loads(response["Body"].read())


@pytest.mark.parametrize("request_", [case[1] for case in REQUESTS], ids=[case[0] for case in REQUESTS])
def test_both_runtimes_answer_an_invoke_endpoint_request_the_same(runtimes, request_):
    request_ = request_(runtimes.images) if callable(request_) else request_
    answers = {runtime: invoke_endpoint(client, request_) for runtime, (_, client) in runtimes.endpoints.items()}
    assert answers["toolkit"] == answers["builtin"], answers
    status, _, body = answers["toolkit"]
    if status == 200:
        assert body["predictions"] and all("probability" in prediction for prediction in body["predictions"])
    elif isinstance(body, dict):   # the model's refusal: short JSON, no trace
        assert set(body) == {"error", "message"} and "Traceback" not in body["message"]


def container_answer(url, method, path, body=None, headers=None):
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=70)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    answer = (response.status, response.getheader("Content-Type"), response.read())
    connection.close()
    return answer


@pytest.mark.parametrize("body, headers", [
    (JPEG, {"Content-Type": "image/jpeg"}),
    (JPEG, {"Content-Type": "image/jpeg", "x-amzn-sagemaker-custom-attributes": "top_k=2"}),
    (JPEG, {"Content-Type": "image/jpeg", "X-AMZN-SAGEMAKER-CUSTOM-ATTRIBUTES": "top_k=0"}),
    (b'{"url": "\xff"}', {"Content-Type": "application/json"}),
    (b"", {"Content-Type": "image/png"}),
], ids=["jpeg", "custom attributes in lower case", "custom attributes in upper case", "not UTF-8", "empty"])
def test_both_runtimes_answer_the_containers_invocations_the_same(runtimes, body, headers):
    answers = {runtime: container_answer(url, "POST", "/invocations", body, headers)
               for runtime, (url, _) in runtimes.endpoints.items()}
    assert answers["toolkit"] == answers["builtin"], answers
    assert answers["toolkit"][1] == "application/json"


def test_both_runtimes_answer_a_body_over_torchserves_limit_on_invocations_as_torchserve_does(runtimes):
    """Only TorchServe's limit applies at the container's port (the toolkit runtime's shim passes the body on)."""
    body = bytes(int(container_environment(LocalSettings(state_dir="."))["TS_MAX_REQUEST_SIZE"]) + 1)
    answers = {runtime: container_answer(url, "POST", "/invocations", body, {"Content-Type": "image/jpeg"})
               for runtime, (url, _) in runtimes.endpoints.items()}
    assert answers == {"toolkit": (413, None, b""), "builtin": (413, None, b"")}


def write_handler(model_dir, name, predict, output):
    """code/<name> in model_dir: a handler whose predict_fn and output_fn bodies are `predict` and `output`."""
    code = model_dir / "code"
    code.mkdir()
    (code / name).write_text(
        "def model_fn(model_dir): return None\n"
        "def input_fn(body, content_type): return body\n"
        f"def predict_fn(data, model): {predict}\n"
        f"def output_fn(prediction, accept): {output}\n")
    return name


def test_a_body_sagemaker_runtime_passes_on_but_torchserve_refuses_is_a_413_model_error(tmp_path):
    """The builtin runtime answers TorchServe's limit behind InvokeEndpoint's own, as the toolkit's TorchServe does."""
    program = write_handler(tmp_path, "echo_handler.py", predict="return data",
                            output="return prediction, 'application/octet-stream'")
    app = create_app(tmp_path, "dog-breeds-local", program=program, max_request_bytes=1000)

    def post(path, size, chunked=False):   # chunked: no Content-Length, the body is read until it ends
        """(status, content type, body, bytes of the request left unread)."""
        answer, sent = {}, io.BytesIO(bytes(size))
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "CONTENT_TYPE": "image/jpeg", "wsgi.input": sent}
        if not chunked:
            environ["CONTENT_LENGTH"] = str(size)
        body = b"".join(app(environ, lambda status, headers: answer.update(status=status, headers=dict(headers))))
        return answer["status"][:3], answer["headers"].get("Content-Type"), body, len(sent.read())

    invoke = "/endpoints/dog-breeds-local/invocations"
    assert post(invoke, 1000)[:2] == ("200", "application/octet-stream")
    status, _, body, _ = post(invoke, 1001)
    assert status == "424" and json.loads(body)["OriginalStatusCode"] == 413
    assert json.loads(body)["OriginalMessage"] == ""
    for chunked in (False, True):   # read to its end, as TorchServe does, so the client can read the answer
        assert post("/invocations", 1001, chunked) == ("413", None, b"", 0)
    status, _, body, _ = post(invoke, INVOKE_ENDPOINT_MAX_BYTES + 1)   # SageMaker Runtime's own refusal
    assert status == "413" and f"exceeds {INVOKE_ENDPOINT_MAX_BYTES} bytes" in json.loads(body)["message"]
    assert INVOKE_ENDPOINT_MAX_BYTES == MAX_REQUEST_BYTES   # what the handler and the container environment use


def test_both_runtimes_are_healthy_only_with_the_model_loaded(runtimes):
    for runtime, (url, _) in runtimes.endpoints.items():
        assert container_answer(url, "GET", "/ping")[0] == 200, runtime


def test_the_builtin_runtime_answers_an_unforeseen_failure_with_the_handlers_own_500(tmp_path):
    program = write_handler(tmp_path, "failing_handler.py", predict="raise RuntimeError('secret detail')",
                            output="return prediction")
    host = ModelHost(tmp_path, program=program)
    status, body, content_type = host.invoke(b"x", "image/jpeg", "application/json", {})
    assert (status, content_type) == (500, "application/json")
    assert body == InternalServerError().message and "secret" not in body


def test_the_archive_training_writes_asks_the_image_to_install_nothing(trained_model_dir, tmp_path):
    with tarfile.open(trained_model_dir.parent / "model.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    assert requirements_named(tmp_path) == []   # the image's torch, torchvision and Pillow are all it needs


def test_the_toolkit_runtime_refuses_an_archive_whose_requirements_name_a_package(trained_model_dir, tmp_path):
    """The image would pip-install it into its own environment; the toolkit runtime's is the project's venv."""
    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model)
    (model / "code" / "requirements.txt").write_text("# extra\nrequests==2.0.0\n")
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(model)), recursive=False)
    result = subprocess.run([sys.executable, "-m", "local.toolkit_endpoint", "--archive", str(archive),
                             "--base-dir", str(tmp_path / "base"), "--backend-port", str(free_port())],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert "code/requirements.txt naming requests==2.0.0" in last_line and "Traceback" not in result.stderr
    assert list((tmp_path / "base" / "work").iterdir()) == []   # refused before TorchServe or the shim started


def test_torchserve_and_its_jvm_take_the_frontend_settings_from_the_container_environment(local_stack):
    """What the endpoint module sets for the real image reaches TorchServe's JVM and TorchServe themselves."""
    environment = container_environment(local_stack.settings)
    log = Path(read_state(local_stack.settings)["endpoint"]["log"]).read_text()
    assert f"Picked up JAVA_TOOL_OPTIONS: {environment['JAVA_TOOL_OPTIONS']}" in log
    assert f"Disable system metrics: {environment['TS_DISABLE_SYSTEM_METRICS']}" in log
