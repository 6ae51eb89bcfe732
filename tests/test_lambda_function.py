"""lambda_function.py as Lambda runs it: event shapes, and how each endpoint outcome reaches the caller.

The handler runs from the function zip in awslambdaric execution environments behind the local function server
(tests/function_testlib.py), called with boto3's lambda client; its own boto3 client calls a loopback SageMaker
Runtime that answers what each test sets (AWS faked at the network) and records what the handler sent. A few
checks of the module itself (its client's settings, its imports, a missing ENDPOINT_NAME, an unreachable endpoint)
import it in-process. The end-to-end tests run the same handler against the real local endpoint.
"""

import base64
import json
import socket
import time
import uuid

import boto3
import pytest
from botocore.config import Config

from stack_common.function_zip import HANDLER_FILE, load_handler_module
from function_testlib import (ENDPOINT_NAME, ENDPOINT_READ_TIMEOUT_S, endpoint, function_server,  # noqa: F401
                              invoke, model_error, ok, service_error)

ENDPOINT = ENDPOINT_NAME
IMAGE = b"\xff\xd8\xff\xe0 pretend jpeg"
ANSWER = {"model_version": "abc123", "predictions": [{"class_name": "Pug", "index": 1, "probability": 0.9}]}


class Context:
    aws_request_id = str(uuid.uuid4())


@pytest.fixture(scope="module")
def module():
    """The handler file imported in-process as Lambda would, with the environment Terraform gives it."""
    patch = pytest.MonkeyPatch()
    patch.setenv("ENDPOINT_NAME", ENDPOINT)
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    patch.setenv("AWS_ACCESS_KEY_ID", "test")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    yield load_handler_module("lambda_function_under_test")
    patch.undo()


@pytest.fixture(scope="module")
def client(function_server):
    return function_server.client()


@pytest.fixture
def function(client, endpoint):
    """handle(event) -> the handler's answer, through the runtime; the fake endpoint's requests start empty."""
    endpoint.requests.clear()
    endpoint.answer = ok(ANSWER)

    def handle(event):
        error, answer = invoke(client, event)
        assert error is None, answer
        return answer

    return handle


def body_of(response):
    assert response["headers"] == {"Content-Type": "application/json"}
    return json.loads(response["body"])


def sent(endpoint):
    """(headers, body) of the one InvokeEndpoint request the handler made."""
    [(path, headers, body)] = endpoint.requests
    assert path == f"/endpoints/{ENDPOINT}/invocations"
    return {name.lower(): value for name, value in headers.items()}, body


def test_client_has_short_connect_long_read_timeouts_and_standard_retries(module):
    config = module.runtime.meta.config
    assert config.connect_timeout <= 5
    assert config.read_timeout > 60
    assert config.retries["mode"] == "standard"


def test_original_url_event_is_sent_as_json_and_answered_200(function, endpoint):
    response = function({"url": "https://dogs.example/pug.jpg"})
    assert response["statusCode"] == 200
    assert body_of(response) == ANSWER
    headers, body = sent(endpoint)
    assert (headers["content-type"], headers["accept"]) == ("application/json", "application/json")
    assert json.loads(body) == {"url": "https://dogs.example/pug.jpg"}


def test_base64_image_event_is_sent_as_raw_bytes_with_top_k_in_custom_attributes(function, endpoint):
    event = {"image": base64.b64encode(IMAGE).decode(), "top_k": 2}
    assert function(event)["statusCode"] == 200
    headers, body = sent(endpoint)
    assert body == IMAGE and headers["content-type"] == "application/x-image"
    assert headers["x-amzn-sagemaker-custom-attributes"] == "top_k=2"


@pytest.mark.parametrize("event", [
    {"body": json.dumps({"url": "https://dogs.example/pug.jpg", "top_k": 3}), "requestContext": {},
     "isBase64Encoded": False},
    {"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "POST"}}, "isBase64Encoded": True,
     "body": base64.b64encode(json.dumps({"url": "https://dogs.example/pug.jpg", "top_k": 3}).encode()).decode()},
    {"body": json.dumps({"url": "https://dogs.example/pug.jpg"}), "requestContext": {},
     "queryStringParameters": {"top_k": "3"}},
])
def test_api_gateway_and_function_url_proxy_events(function, endpoint, event):
    assert function(event)["statusCode"] == 200
    assert json.loads(sent(endpoint)[1]) == {"url": "https://dogs.example/pug.jpg", "top_k": 3}


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
    ({"url": "ftp://example.com/dog.jpg"}, "http:// or https://"),
    ({"url": "file:///etc/passwd"}, "http:// or https://"),
    ({"url": "javascript:alert(1)"}, "http:// or https://"),
    ({"url": "data:image/png;base64,iVBORw0KGgo="}, "http:// or https://"),
    ({"url": "example.com/dog.jpg"}, "without a scheme"),
    ({"url": "https:///dog.jpg"}, "no host"),
    ({"url": "https://user:pw@example.com/dog.jpg"}, "user info"),
    ({"url": "https://@example.com/dog.jpg"}, "user info"),
    ({"url": "https://exa\nmple.com/dog.jpg"}, "whitespace or control"),
    ({"url": "https://example.com/my dog.jpg"}, "whitespace or control"),
    ({"url": "https://example.com/dog\x00.jpg"}, "whitespace or control"),
    ({"url": "https://example.com/" + "a" * 100_000}, "the limit is 2048"),
    ({"url": "https://[::1/dog.jpg"}, "not a valid URL"),
    ({"url": "https://example.com:99999/dog.jpg"}, "not a valid URL"),
    ({"body": json.dumps({"url": "gopher://example.com/"}), "requestContext": {}}, "http:// or https://"),
])
def test_every_malformed_event_is_a_400_saying_what_was_expected(function, endpoint, event, fragment):
    response = function(event)
    assert response["statusCode"] == 400
    body = body_of(response)
    assert body["error"] == "BadRequest" and fragment in body["message"]
    assert endpoint.requests == [], "a malformed event reached the endpoint"


def test_a_url_of_2048_characters_is_still_sent(function, endpoint):
    url = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    assert function({"url": url})["statusCode"] == 200
    assert json.loads(sent(endpoint)[1])["url"] == url


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_a_client_error_from_the_model_keeps_its_status_and_message(function, endpoint, status):
    container_body = {"error": "NotAnImage", "message": "not an image in a supported format"}
    endpoint.answer = model_error(status, json.dumps(container_body))
    response = function({"url": "https://dogs.example/x.jpg"})
    assert response["statusCode"] == status
    assert body_of(response) == container_body


def test_a_model_crash_is_a_502_without_the_containers_details(function, endpoint):
    endpoint.answer = model_error(500, "Traceback (most recent call last): secret internals")
    response = function({"url": "https://dogs.example/x.jpg"})
    assert response["statusCode"] == 502
    assert "secret" not in response["body"]


@pytest.mark.parametrize("original_status", [422, 504], ids=["the endpoint's 422", "a model before it: 504"])
def test_an_image_fetch_timeout_in_the_model_is_a_504_upstream_timeout(function, endpoint, original_status):
    endpoint.answer = model_error(original_status, json.dumps({"error": "FetchTimeout", "message": "..."}))
    response = function({"url": "https://slow.example/x.jpg"})
    assert (response["statusCode"], json.loads(response["body"])["error"]) == (504, "UpstreamTimeout")


def test_the_function_knows_the_endpoints_fetch_timeout_code(module):
    from inference_errors import FetchTimeoutError

    assert module.FETCH_TIMEOUT_CODE == FetchTimeoutError.code
    assert 400 <= FetchTimeoutError.status_code < 500   # never in the rollback alarm's Invocation5XXErrors


@pytest.mark.parametrize("code, http_status, expected", [
    ("ThrottlingException", 400, 429), ("ServiceUnavailable", 503, 503), ("ValidationError", 400, 502),
    ("InternalFailure", 500, 502),
])
def test_service_errors_map_to_throttled_unavailable_or_bad_gateway(function, endpoint, code, http_status, expected):
    endpoint.answer = service_error(code, http_status)
    assert function({"url": "https://dogs.example/x.jpg"})["statusCode"] == expected


def test_an_endpoint_that_does_not_answer_in_time_is_a_504(function, endpoint):
    endpoint.answer = lambda handler: time.sleep(ENDPOINT_READ_TIMEOUT_S + 0.5)   # then closes, unanswered
    started = time.monotonic()
    assert function({"url": "https://dogs.example/x.jpg"})["statusCode"] == 504
    assert time.monotonic() - started < 4 * ENDPOINT_READ_TIMEOUT_S + 2   # two attempts and a backoff at most


def test_an_unreachable_endpoint_is_a_502(module, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]   # nothing listens here once closed
    closed = boto3.client("sagemaker-runtime", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x",
                          config=Config(connect_timeout=1, retries={"total_max_attempts": 1}))
    monkeypatch.setattr(module, "runtime", closed)
    assert module.lambda_handler({"url": "https://dogs.example/x.jpg"}, Context())["statusCode"] == 502


def test_logs_are_json_lines_with_the_request_id_in_lambdas_log_format(function, function_server):
    response = function_server.client().invoke(FunctionName="dog-breeds-test",
                                      Payload=json.dumps({"url": "https://dogs.example/pug.jpg"}).encode())
    request_id = response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    lines = [line.split("\t") for line in function_server.log().splitlines() if f"\t{request_id}\t" in line]
    assert [fields[0] for fields in lines] == ["[INFO]", "[INFO]"]   # awslambdaric's level, time, request id
    records = [json.loads(fields[3]) for fields in lines]
    assert [r["message"] for r in records] == ["invoking endpoint", "prediction returned"]
    assert all(r["request_id"] == request_id for r in records)
    assert records[0]["url"] == "https://dogs.example/pug.jpg" and records[0]["endpoint"] == ENDPOINT


def test_the_handler_needs_nothing_but_boto3_and_the_standard_library():
    import ast
    import sys

    tree = ast.parse(HANDLER_FILE.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported - set(sys.stdlib_module_names) <= {"boto3", "botocore"}


def test_a_missing_endpoint_name_is_a_clear_500(module, monkeypatch):
    monkeypatch.setattr(module, "ENDPOINT_NAME", "")
    response = module.lambda_handler({"url": "https://dogs.example/pug.jpg"}, Context())
    assert response["statusCode"] == 500 and "ENDPOINT_NAME" in body_of(response)["message"]


def test_terraform_gives_the_function_time_for_every_endpoint_attempt_it_makes(module):
    """Lambda must not kill the function while its client still waits: a hung model must come back as a 504."""
    import hcl2

    with open(HANDLER_FILE.parent.parent / "terraform" / "modules" / "lambda" / "variables.tf") as handle:
        variables = {name: body for entry in hcl2.load(handle)["variable"] for name, body in entry.items()}
    default = variables["timeout"]["default"]
    lambda_timeout_s = default[0] if isinstance(default, list) else default
    config = module.runtime.meta.config
    attempts = config.retries["total_max_attempts"]
    assert lambda_timeout_s > attempts * (config.connect_timeout + config.read_timeout)
