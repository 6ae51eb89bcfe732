"""Property tests: thousands of generated events and bodies, and not one unhandled exception or malformed answer.

The function's event parser runs in-process; the whole handler runs as Lambda runs it, in awslambdaric
environments behind the local function server, its SageMaker Runtime a loopback fake whose answer is drawn from
every shape the service can give (AWS is faked, our code is not). input_fn runs in-process behind FakeNetwork, so
generated URLs resolve nowhere and nothing leaves loopback, and, with fewer examples, on the toolkit runtime (the
session's local stack: AWS's SageMaker toolkit on TorchServe), through the container's own /invocations.
Example counts: RELIABILITY_PROPERTY_EXAMPLES scales them (default 1.0).
"""

import base64
import http.client
import io
import json
import os
import time
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import inference
from function_testlib import endpoint, function_server, model_error, ok, service_error  # noqa: F401 (fixtures)
from inference_errors import InferenceError
from local.stack import endpoint_workers
from reliability_testlib import REPO_ROOT, FakeNetwork, write_report

SCALE = float(os.environ.get("RELIABILITY_PROPERTY_EXAMPLES", "1"))
SERVER_SIDE_STATUSES = {502, 503, 504}   # the endpoint failed, is not ready, or timed out: never a bare 500
COUNTS = {}


def examples(count):
    return settings(max_examples=max(10, int(count * SCALE)), deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def counted(name):
    COUNTS[name] = COUNTS.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def property_report():
    started = time.perf_counter()
    yield
    write_report("properties", {"examples": dict(COUNTS), "total_examples": sum(COUNTS.values()),
                                "seconds": round(time.perf_counter() - started, 1)})


# ------------------------------------------------------------------------------------------------ strategies

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)), max_leaves=12)

hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "[::1]", "169.254.169.254", "0x7f000001", "10.0.0.1", "example.com",
                     "images.example", "ĉhien.example", "xn--hien-7ra.example", "", "[::ffff:127.0.0.1]", "a..b",
                     "user:pass@127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", "[fd00::1"]),
    st.text(max_size=20))
urls = st.one_of(
    st.builds(lambda scheme, host, path: f"{scheme}{host}{path}",
              st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "file://", "gopher://", "//", "", "http:"]),
              hosts, st.text(max_size=30)),
    st.text(max_size=60))


@st.composite
def images(draw):
    """Small image files of many formats and modes, sometimes truncated or with flipped bytes."""
    mode = draw(st.sampled_from(["RGB", "L", "P", "RGBA", "CMYK", "I;16", "1", "LA", "I", "F"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"]))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    buffer = io.BytesIO()
    try:
        Image.new(mode, size).save(buffer, fmt)
    except (OSError, ValueError, KeyError):
        buffer = io.BytesIO()
        Image.new("RGB", size, (200, 100, 50)).save(buffer, "PNG")
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[:draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip" and data:
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]
    return data


def base64_of(data_strategy):
    return st.one_of(data_strategy.map(lambda data: base64.b64encode(data).decode()),
                     data_strategy.map(lambda data: "data:image/png;base64," + base64.b64encode(data).decode()),
                     st.text(max_size=40))


def request_bodies(base64_texts):
    """{"url"?, "image"?, "top_k"?, "extra"?} with values of the right type, the wrong type, or garbage."""
    field_values = st.one_of(json_values, urls, base64_texts, st.integers(-3, 200))
    return st.fixed_dictionaries({}, optional={"url": st.one_of(urls, field_values),
                                               "image": st.one_of(base64_texts, field_values),
                                               "top_k": st.one_of(st.integers(-2, 300), field_values),
                                               "extra": json_values})


# The function only checks that "image" is base64 (the endpoint decodes it): random bytes are enough there.
requests = request_bodies(base64_of(st.binary(max_size=64)))


def _as_body(payload, encode):
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return base64.b64encode(text.encode()).decode() if encode else text


proxy_events = st.builds(
    lambda payload, encode, marked, query, context: {"body": _as_body(payload, encode) if payload is not None
                                                     else None,
                                                     "isBase64Encoded": marked if marked is not None else encode,
                                                     "queryStringParameters": query, "requestContext": context},
    st.one_of(st.none(), requests, json_values, st.text(max_size=40)), st.booleans(),
    st.one_of(st.none(), json_values), st.one_of(st.none(), st.dictionaries(st.text(max_size=8), st.text(max_size=8)),
                                                 st.just({"top_k": "3"}), st.just({"top_k": "x"}), json_values),
    st.one_of(st.just({"http": {"method": "POST"}}), json_values))
events = st.one_of(json_values, requests, proxy_events)

# What the endpoint may answer: a prediction, the container's error through ModelError, or a service error.
endpoint_answers = st.one_of(
    st.builds(lambda body: ("ok", body), st.one_of(st.just({"model_version": "v1", "predictions": []}), json_values)),
    st.builds(lambda status, message: ("ModelError", status, message), st.integers(400, 599),
              st.one_of(st.text(max_size=80), json_values.map(json.dumps),
                        st.just('{"error": "NotAnImage", "message": "not an image"}'))),
    st.sampled_from([("ThrottlingException", 400), ("ServiceUnavailable", 503), ("ValidationError", 400),
                     ("InternalFailure", 500), ("ModelNotReadyException", 429), ("AccessDeniedException", 403)]),
)


# ------------------------------------------------------------------------------------------------ the function

@pytest.fixture(scope="module")
def lambda_function():
    """The handler module in-process, for its event parser."""
    patch = pytest.MonkeyPatch()
    patch.syspath_prepend(str(REPO_ROOT / "lambda"))   # the zip's layout: lambda_function.py at the top
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")     # Lambda's runtime always sets the region
    import lambda_function

    yield lambda_function
    patch.undo()


@pytest.fixture(scope="module")
def function_client(function_server):
    """A lambda client for the function zip running in awslambdaric environments, calling the fake endpoint."""
    return function_server.client()


def _wire(answer):
    """The drawn endpoint answer in the service's wire format."""
    if answer[0] == "ok":
        return ok(answer[1])
    if answer[0] == "ModelError":
        return model_error(answer[1], answer[2])
    return service_error(answer[0], answer[1])


def assert_well_formed_function_answer(answer):
    assert set(answer) == {"statusCode", "headers", "body"}
    status = answer["statusCode"]
    assert status == 200 or 400 <= status < 500 or status in SERVER_SIDE_STATUSES, status
    assert answer["headers"] == {"Content-Type": "application/json"}
    body = json.loads(answer["body"])
    if answer["statusCode"] != 200:
        assert isinstance(body, dict) and "error" in body


def assert_can_name_an_image_on_the_web(url):
    parts = urlsplit(url)
    assert parts.scheme.lower() in ("http", "https") and parts.hostname and "@" not in parts.netloc
    assert len(url) <= 2048 and not any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url)


@examples(1500)
@given(event=events)
def test_event_parsing_accepts_a_request_or_says_what_was_expected(lambda_function, event):
    counted("function parse_event")
    try:
        request = lambda_function.parse_event(event)
    except lambda_function.BadEvent as error:
        assert str(error)
        return
    assert (request.url is None) != (request.image is None)
    assert request.url is None or (isinstance(request.url, str) and request.url.strip())
    if request.url is not None:
        assert_can_name_an_image_on_the_web(request.url)
    assert request.image is None or isinstance(request.image, bytes)
    assert request.top_k is None or (isinstance(request.top_k, int) and request.top_k >= 1)


# Through the runtime each example is a real invocation (and a drawn 5xx or throttle is retried once by the
# handler's client after a backoff): fewer examples than in-process.
@examples(120)
@given(event=events, answer=endpoint_answers)
def test_the_function_always_answers_a_well_formed_response(lambda_function, function_client, endpoint, event,
                                                           answer):
    counted("function through awslambdaric")
    try:
        lambda_function.parse_event(event)
        calls_endpoint = True
    except lambda_function.BadEvent:
        calls_endpoint = False
    endpoint.answer = _wire(answer)
    endpoint.requests.clear()
    response = function_client.invoke(FunctionName="dog-breeds-test", Payload=json.dumps(event).encode())
    payload = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, payload
    assert_well_formed_function_answer(payload)
    if not calls_endpoint:
        assert payload["statusCode"] == 400 and endpoint.requests == []


# ------------------------------------------------------------------------------------------------ input_fn

def header_context(custom_attributes):
    """TorchServe's request context as the builtin runtime builds it, with the header spelled as boto3 sends it."""
    from local.endpoint_server import RequestContext

    return RequestContext({"X-Amzn-SageMaker-Custom-Attributes": custom_attributes})


content_types = st.one_of(st.sampled_from(["application/json", "application/json; charset=utf-8", "image/jpeg",
                                           "image/png", "image/webp", "application/x-image", "IMAGE/PNG", "",
                                           None, "text/plain", "*/*", "multipart/form-data; boundary=x"]),
                          st.text(max_size=30))
bodies = st.one_of(st.binary(max_size=512), images(), st.text(max_size=80), json_values.map(json.dumps),
                   request_bodies(base64_of(images())).map(json.dumps))
custom_attributes = st.one_of(st.none(), st.just("top_k=3"), st.just("top_k=0"), st.just("top_k=abc"),
                              st.just("a=b; top_k = 2"), st.text(max_size=30))


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.delenv("IMAGE_FETCH_ALLOW_NETWORKS", raising=False)
    return FakeNetwork(monkeypatch)


@examples(1200)
@given(body=bodies, content_type=content_types, attributes=custom_attributes)
def test_input_fn_returns_an_image_or_a_typed_client_error(offline, body, content_type, attributes):
    counted("endpoint input_fn")
    context = header_context(attributes) if attributes is not None else None
    try:
        request = inference.input_fn(body, content_type, context)
    except InferenceError as error:
        assert 400 <= error.status_code < 500, error
        message = json.loads(error.message)
        assert set(message) == {"error", "message"} and all(isinstance(v, str) for v in message.values())
        return
    assert request.image.mode == "RGB" and min(request.image.size) >= 1
    assert isinstance(request.top_k, int) and request.top_k >= 1
    assert offline.outside_connections() == []


# Header values http.client can send (printable ASCII): anything else never reaches a server as a header.
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
sendable_content_types = st.one_of(content_types.filter(lambda value: value is None or value.isascii() and
                                                        value.isprintable()), header_text)
sendable_custom_attributes = st.one_of(custom_attributes.filter(lambda value: value is None or value.isascii() and
                                                                value.isprintable()), header_text)


def post_invocations(endpoint_url, body, headers):
    host, port = endpoint_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=70)
    try:
        connection.request("POST", "/invocations", body=body.encode() if isinstance(body, str) else body,
                           headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def test_the_toolkit_runtime_answers_generated_requests_without_a_5xx_and_keeps_its_workers(local_stack):
    """input_fn's property on AWS's serving stack: every generated request gets a 2xx or a short JSON 4xx, never a
    5xx (a rollback alarm's metric), and no worker dies of one."""
    record = json.loads((local_stack.settings.state_dir / "stack.json").read_text())["endpoint"]
    assert record["runtime"] == "toolkit"
    workers = sorted(endpoint_workers(record).items())
    assert workers and all(loaded for _, loaded in workers), workers

    @examples(40)
    @given(body=bodies, content_type=sendable_content_types, attributes=sendable_custom_attributes)
    def answers_well_formed(body, content_type, attributes):
        counted("endpoint /invocations on the toolkit runtime")
        headers = {"Content-Type": content_type} if content_type is not None else {}
        if attributes is not None:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
        status, answer_type, answer = post_invocations(local_stack.settings.endpoint_url, body, headers)
        assert status < 500, (status, answer)
        assert answer_type == "application/json", (status, answer_type, answer)
        message = json.loads(answer)
        if status >= 400:
            assert set(message) == {"error", "message"} and all(isinstance(v, str) for v in message.values())
        else:
            assert status == 200 and isinstance(message["predictions"], list)

    answers_well_formed()
    assert sorted(endpoint_workers(record).items()) == workers
