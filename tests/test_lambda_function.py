"""lambda_function.py on its own: event shapes, and how each endpoint outcome reaches the caller.

The SageMaker Runtime answers are botocore's Stubber (AWS faked at the client) or a loopback socket that never
answers (the network faked); the end-to-end tests run the same handler against the real local endpoint.
"""

import base64
import importlib.util
import io
import json
import logging
import socket
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.response import StreamingBody
from botocore.stub import Stubber

LAMBDA_FILE = Path(__file__).resolve().parent.parent / "lambda" / "lambda_function.py"
ENDPOINT = "dog-breeds-test"
IMAGE = b"\xff\xd8\xff\xe0 pretend jpeg"
ANSWER = {"model_version": "abc123", "predictions": [{"class_name": "Pug", "index": 1, "probability": 0.9}]}


class Context:
    aws_request_id = str(uuid.uuid4())


@pytest.fixture(scope="module")
def function():
    """Import the handler file as Lambda does, with the environment Terraform gives it."""
    patch = pytest.MonkeyPatch()
    patch.setenv("ENDPOINT_NAME", ENDPOINT)
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    patch.setenv("AWS_ACCESS_KEY_ID", "test")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    spec = importlib.util.spec_from_file_location("lambda_function_under_test", LAMBDA_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    patch.undo()


@pytest.fixture
def endpoint(function):
    with Stubber(function.runtime) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def body_of(response):
    assert response["headers"] == {"Content-Type": "application/json"}
    return json.loads(response["body"])


def expect_call(endpoint, expected_params, answer=ANSWER):
    data = json.dumps(answer).encode()
    endpoint.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(data), len(data)),
                                              "ContentType": "application/json"}, expected_params)


def test_client_has_short_connect_long_read_timeouts_and_standard_retries(function):
    config = function.runtime.meta.config
    assert config.connect_timeout <= 5
    assert config.read_timeout > 60
    assert config.retries["mode"] == "standard"


def test_original_url_event_is_sent_as_json_and_answered_200(function, endpoint):
    expect_call(endpoint, {"EndpointName": ENDPOINT, "Accept": "application/json", "ContentType": "application/json",
                           "Body": json.dumps({"url": "https://dogs.example/pug.jpg"}).encode()})
    response = function.lambda_handler({"url": "https://dogs.example/pug.jpg"}, Context())
    assert response["statusCode"] == 200
    assert body_of(response) == ANSWER


def test_base64_image_event_is_sent_as_raw_bytes_with_top_k_in_custom_attributes(function, endpoint):
    expect_call(endpoint, {"EndpointName": ENDPOINT, "Accept": "application/json",
                           "ContentType": "application/x-image", "Body": IMAGE, "CustomAttributes": "top_k=2"})
    event = {"image": base64.b64encode(IMAGE).decode(), "top_k": 2}
    assert function.lambda_handler(event, Context())["statusCode"] == 200


@pytest.mark.parametrize("event", [
    {"body": json.dumps({"url": "https://dogs.example/pug.jpg", "top_k": 3}), "requestContext": {},
     "isBase64Encoded": False},
    {"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "POST"}}, "isBase64Encoded": True,
     "body": base64.b64encode(json.dumps({"url": "https://dogs.example/pug.jpg", "top_k": 3}).encode()).decode()},
    {"body": json.dumps({"url": "https://dogs.example/pug.jpg"}), "requestContext": {},
     "queryStringParameters": {"top_k": "3"}},
])
def test_api_gateway_and_function_url_proxy_events(function, endpoint, event):
    expect_call(endpoint, {"EndpointName": ENDPOINT, "Accept": "application/json", "ContentType": "application/json",
                           "Body": json.dumps({"url": "https://dogs.example/pug.jpg", "top_k": 3}).encode()})
    assert function.lambda_handler(event, Context())["statusCode"] == 200


@pytest.mark.parametrize("event, fragment", [
    ({}, "expected"),
    ([], "JSON object"),
    ("https://dogs.example/pug.jpg", "JSON object"),
    ({"url": "https://a.example/x.jpg", "image": "AAAA"}, "expected"),
    ({"url": 42}, "non-empty string"),
    ({"url": "  "}, "non-empty string"),
    ({"image": "%%% not base64"}, "not valid base64"),
    ({"image": ""}, "non-empty base64"),
    ({"url": "https://a.example/x.jpg", "top_k": 0}, "top_k"),
    ({"url": "https://a.example/x.jpg", "top_k": "many"}, "top_k"),
    ({"body": None, "requestContext": {}}, "body is empty"),
    ({"body": "not json", "requestContext": {}}, "not JSON"),
    ({"body": "!!!", "requestContext": {}, "isBase64Encoded": True}, "base64"),
    ({"body": "[1, 2]", "requestContext": {}}, "expected"),
])
def test_every_malformed_event_is_a_400_saying_what_was_expected(function, endpoint, event, fragment):
    response = function.lambda_handler(event, Context())   # the stubber fails the test if the endpoint is called
    assert response["statusCode"] == 400
    body = body_of(response)
    assert body["error"] == "BadRequest" and fragment in body["message"]


def model_error(endpoint, original_status, original_message):
    endpoint.add_client_error("invoke_endpoint", service_error_code="ModelError", http_status_code=424,
                              service_message="Received client error", expected_params=None,
                              modeled_fields={"OriginalStatusCode": original_status,
                                              "OriginalMessage": original_message,
                                              "LogStreamArn": "arn:aws:logs:us-east-1:1:log-group:/x"})


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_a_client_error_from_the_model_keeps_its_status_and_message(function, endpoint, status):
    container_body = {"error": "NotAnImage", "message": "not an image in a supported format"}
    model_error(endpoint, status, json.dumps(container_body))
    response = function.lambda_handler({"url": "https://dogs.example/x.jpg"}, Context())
    assert response["statusCode"] == status
    assert body_of(response) == container_body


def test_a_model_crash_is_a_502_without_the_containers_details(function, endpoint):
    model_error(endpoint, 500, "Traceback (most recent call last): secret internals")
    response = function.lambda_handler({"url": "https://dogs.example/x.jpg"}, Context())
    assert response["statusCode"] == 502
    assert "secret" not in response["body"]


def test_an_image_fetch_timeout_in_the_model_is_a_504(function, endpoint):
    model_error(endpoint, 504, json.dumps({"error": "FetchTimeout", "message": "..."}))
    assert function.lambda_handler({"url": "https://slow.example/x.jpg"}, Context())["statusCode"] == 504


@pytest.mark.parametrize("code, http_status, expected", [
    ("ThrottlingException", 400, 429), ("ServiceUnavailable", 503, 503), ("ValidationError", 400, 502),
    ("InternalFailure", 500, 502),
])
def test_service_errors_map_to_throttled_unavailable_or_bad_gateway(function, endpoint, code, http_status, expected):
    endpoint.add_client_error("invoke_endpoint", service_error_code=code, http_status_code=http_status)
    assert function.lambda_handler({"url": "https://dogs.example/x.jpg"}, Context())["statusCode"] == expected


def test_an_endpoint_that_does_not_answer_in_time_is_a_504(function, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)           # accepts connections into the backlog, never answers
    port = listener.getsockname()[1]
    silent = boto3.client("sagemaker-runtime", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x",
                          config=Config(connect_timeout=1, read_timeout=0.3, retries={"total_max_attempts": 1}))
    monkeypatch.setattr(function, "runtime", silent)
    try:
        response = function.lambda_handler({"url": "https://dogs.example/x.jpg"}, Context())
    finally:
        listener.close()
    assert response["statusCode"] == 504


def test_an_unreachable_endpoint_is_a_502(function, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]   # nothing listens here once closed
    closed = boto3.client("sagemaker-runtime", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x",
                          config=Config(connect_timeout=1, retries={"total_max_attempts": 1}))
    monkeypatch.setattr(function, "runtime", closed)
    assert function.lambda_handler({"url": "https://dogs.example/x.jpg"}, Context())["statusCode"] == 502


def test_logs_are_json_lines_with_the_request_id(function, endpoint, caplog):
    expect_call(endpoint, None)
    context = Context()
    with caplog.at_level(logging.INFO, logger="dog_breeds.function"):
        function.lambda_handler({"url": "https://dogs.example/pug.jpg"}, context)
    records = [json.loads(record.getMessage()) for record in caplog.records]
    assert [r["message"] for r in records] == ["invoking endpoint", "prediction returned"]
    assert all(r["request_id"] == context.aws_request_id for r in records)
    assert records[0]["url"] == "https://dogs.example/pug.jpg" and records[0]["endpoint"] == ENDPOINT


def test_the_handler_needs_nothing_but_boto3_and_the_standard_library():
    import ast
    import sys

    tree = ast.parse(LAMBDA_FILE.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported - set(sys.stdlib_module_names) <= {"boto3", "botocore"}


def test_a_missing_endpoint_name_is_a_clear_500(function, monkeypatch):
    monkeypatch.setattr(function, "ENDPOINT_NAME", "")
    response = function.lambda_handler({"url": "https://dogs.example/pug.jpg"}, Context())
    assert response["statusCode"] == 500 and "ENDPOINT_NAME" in body_of(response)["message"]


def test_terraform_gives_the_function_time_for_every_endpoint_attempt_it_makes(function):
    """Lambda must not kill the function while its client still waits: a hung model must come back as a 504."""
    import hcl2

    with open(LAMBDA_FILE.parent.parent / "terraform" / "modules" / "lambda" / "variables.tf") as handle:
        variables = {name: body for entry in hcl2.load(handle)["variable"] for name, body in entry.items()}
    default = variables["timeout"]["default"]
    lambda_timeout_s = default[0] if isinstance(default, list) else default
    config = function.runtime.meta.config
    attempts = config.retries["total_max_attempts"]
    assert lambda_timeout_s > attempts * (config.connect_timeout + config.read_timeout)
