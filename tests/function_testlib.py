"""Helpers of the function tests: a local function server (bench/loopback_servers.py's FunctionServer, its handler in
awslambdaric environments) started from a zip, and a loopback SageMaker Runtime that answers what a test sets.

The SageMaker Runtime is AWS, so it is faked, at the network: the handler's own boto3 client sends its real
InvokeEndpoint request to it (through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, as the local stack points it at the
local endpoint), and gets the answer the test chose, in the service's wire format.
"""

import json
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from bench.loopback_servers import FUNCTION_NAME, FunctionServer, LoopbackHTTPServer
from stack_common.function_zip import build_function_zip

ENDPOINT_NAME = "dog-breeds-test"   # what the fake endpoint is called by the function under test
ENDPOINT_READ_TIMEOUT_S = 1   # the handler's setting here, so that a silent endpoint costs seconds, not minutes


class FakeSageMakerRuntime(LoopbackHTTPServer):
    """InvokeEndpoint on 127.0.0.1. `answer` is (status, headers, body) for every request until changed, or a
    callable(handler) that answers itself; `requests` records (path, headers, body)."""

    def __init__(self):
        self.requests = []
        self.answer = ok({"model_version": "v1", "predictions": []})
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True   # headers and body are two writes: no delayed-ACK stall between them

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append((self.path, dict(self.headers), body))
                answer = server.answer
                if callable(answer):
                    answer(self)
                    return
                status, headers, data = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._listen(Handler)
        self.url = f"http://127.0.0.1:{self.port}"


def ok(body):
    data = json.dumps(body).encode()
    return 200, {"Content-Type": "application/json", "x-Amzn-Invoked-Production-Variant": "AllTraffic"}, data


def model_error(original_status, original_message):
    """The service's 424 ModelError, as the SageMaker Runtime sends it when the container answers 4xx/5xx."""
    return 424, {"Content-Type": "application/json", "x-amzn-ErrorType": "ModelError"}, json.dumps({
        "ErrorCode": "CLIENT_ERROR_FROM_MODEL", "Message": "Received error from primary container",
        "OriginalStatusCode": original_status, "OriginalMessage": original_message,
        "LogStreamArn": "arn:aws:logs:us-east-1:0:log-group:/aws/sagemaker/Endpoints/x"}).encode()


def service_error(code, status):
    return status, {"Content-Type": "application/json", "x-amzn-ErrorType": code}, json.dumps(
        {"message": f"{code} from the fake service"}).encode()


def build_zip(path, sources):
    """A function zip of {file name: source text}, laid out like build/function.zip."""
    path = Path(path)
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in sources.items():
            archive.writestr(name, text)
    return path




def invoke(client, event, **arguments):
    """(FunctionError or None, the payload parsed) of one synchronous invocation."""
    response = client.invoke(FunctionName=FUNCTION_NAME, Payload=json.dumps(event).encode(), **arguments)
    assert response["StatusCode"] == 200 and response["ExecutedVersion"] == "$LATEST"
    return response.get("FunctionError"), json.loads(response["Payload"].read())


# Fixtures for a test module to import: the function zip in awslambdaric environments, calling a fake endpoint.

@pytest.fixture(scope="module")
def endpoint():
    """The loopback SageMaker Runtime the function server's handler calls."""
    with FakeSageMakerRuntime() as fake:
        yield fake


@pytest.fixture(scope="module")
def function_server(tmp_path_factory, endpoint):
    """A FunctionServer running the function zip with the environment Terraform gives it, pointed at `endpoint`."""
    root = tmp_path_factory.mktemp("function-on-fake-endpoint")
    server = FunctionServer(root, build_function_zip(root / "function.zip"), environment={
        "ENDPOINT_NAME": ENDPOINT_NAME, "LOG_LEVEL": "INFO", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": endpoint.url,
        "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
        "ENDPOINT_READ_TIMEOUT_S": str(ENDPOINT_READ_TIMEOUT_S), "ENDPOINT_CONNECT_TIMEOUT_S": "1"})
    yield server
    server.stop()
