"""The local Lambda function: gunicorn (one gthread worker) + a small WSGI app serving the Lambda Invoke API.

It unpacks the same function zip AWS gets (build/function.zip) like Lambda does into /var/task, imports the
handler from it and serves
  POST /2015-03-31/functions/<name>/invocations   Lambda Invoke, so boto3's lambda client works with endpoint_url:
      RequestResponse -> 200 + X-Amz-Executed-Version, the handler's return value as JSON;
      handler exception -> 200 + X-Amz-Function-Error: Unhandled + {errorMessage, errorType, stackTrace};
      Event -> 202 (runs in the background); DryRun -> 204;
      more than the reserved concurrency in flight -> 429 TooManyRequestsException
      (Reason ReservedFunctionConcurrentInvocationLimitExceeded) at once, as Lambda does.
  GET  /local/status                              in-flight count, limit, code hash (for `invoke status`, tests)
The handler's AWS clients reach the local endpoint through the process environment (AWS_ENDPOINT_URL_* and dummy
credentials, set by local/stack.py), so the handler itself has no local-only code.

    python -m local.function_server --zip build/function.zip --function-dir .state/function --port 9001
"""

import argparse
import importlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import traceback
import uuid
import zipfile
from pathlib import Path

from local.function_zip import source_code_hash
from local.gunicorn_app import KeepAliveThreadWorker, run_gunicorn
from local.wsgi import JSON, HttpError, header, method_not_allowed, not_found, read_body, respond

logger = logging.getLogger("local.function")

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024      # synchronous invocation payload limit, each way
EXECUTED_VERSION = "$LATEST"
ACCOUNT = "000000000000"
INVOKE_PREFIX, INVOKE_SUFFIX = "/2015-03-31/functions/", "/invocations"   # Lambda Invoke: .../<name>/invocations
STATUS_PATH = "/local/status"
KEEPALIVE_S = 60


def unpack_function_zip(zip_path, function_dir):
    """Replace `function_dir` with the zip's contents, as Lambda unpacks a deployment package into /var/task."""
    function_dir = Path(function_dir)
    if function_dir.exists():
        shutil.rmtree(function_dir)
    function_dir.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as archive:
        for name in archive.namelist():
            target = (function_dir / name).resolve()
            if not target.is_relative_to(function_dir.resolve()):
                raise ValueError(f"{zip_path}: entry {name} points outside the function folder")
        archive.extractall(function_dir)
    return function_dir


class ConcurrencyLimit:
    """Reserved concurrency: `try_acquire` never waits, so the call over the limit is refused at once."""

    def __init__(self, limit):
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def try_acquire(self):
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def release(self):
        with self._lock:
            self.in_flight -= 1


class LambdaContext:
    """The context object a Python handler receives."""

    def __init__(self, function_name, region, memory_mb, timeout_s, client_context=None):
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = function_name
        self.function_version = EXECUTED_VERSION
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{ACCOUNT}:function:{function_name}"
        self.memory_limit_in_mb = str(memory_mb)
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/{os.getpid()}"
        self.client_context = client_context
        self.identity = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _error(status, error_type, message, **extra):
    body = {"Type": "User", "message": message, **extra}
    return HttpError(status, body, headers=[("x-amzn-ErrorType", error_type),
                                            ("x-amzn-RequestId", str(uuid.uuid4()))])


def _payload_too_large():
    return _error(413, "RequestTooLargeException",
                  f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the InvokeFunction operation")


def _names_function(requested, function_name):
    """Lambda accepts the name, name:qualifier, or the (partial) ARN."""
    if requested.startswith("arn:"):
        parts = requested.split(":")
        return len(parts) >= 7 and parts[5] == "function" and parts[6] == function_name
    return requested.split(":", 1)[0] == function_name


def create_app(function_dir, function_name, handler="lambda_function.lambda_handler", reserved_concurrency=10,
               region="us-east-1", timeout_s=90, memory_mb=1024, code_sha256=None):
    sys.path.insert(0, str(function_dir))
    module_name, _, handler_name = handler.rpartition(".")
    handler_function = getattr(importlib.import_module(module_name), handler_name)
    limit = ConcurrencyLimit(reserved_concurrency)

    def run(event, client_context):
        context = LambdaContext(function_name, region, memory_mb, timeout_s, client_context)
        try:
            result = handler_function(event, context)
            return context.aws_request_id, json.dumps(result).encode(), None
        except Exception as error:  # Lambda reports the handler's exception to the caller, still with HTTP 200
            logger.error("handler raised:\n%s", traceback.format_exc())
            body = {"errorMessage": str(error), "errorType": type(error).__name__,
                    "requestId": context.aws_request_id,
                    "stackTrace": traceback.format_list(traceback.extract_tb(error.__traceback__))}
            return context.aws_request_id, json.dumps(body).encode(), "Unhandled"

    def run_in_background(event, client_context):
        try:
            run(event, client_context)
        finally:
            limit.release()

    def invoke(environ, requested):
        if not _names_function(requested, function_name):
            raise _error(404, "ResourceNotFoundException",
                         f"Function not found: arn:aws:lambda:{region}:{ACCOUNT}:function:{requested}")
        payload = read_body(environ, MAX_PAYLOAD_BYTES, _payload_too_large)
        try:
            event = json.loads(payload) if payload else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _error(400, "InvalidRequestContentException",
                         f"Could not parse request body into json: {error}") from None
        invocation_type = header(environ, "X-Amz-Invocation-Type") or "RequestResponse"
        if invocation_type == "DryRun":
            return 204, b"", ()
        if invocation_type not in ("RequestResponse", "Event"):
            raise _error(400, "InvalidParameterValueException", f"Unsupported invocation type {invocation_type}")
        if not limit.try_acquire():
            raise _error(429, "TooManyRequestsException", "Rate Exceeded.",
                         Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
        client_context = header(environ, "X-Amz-Client-Context")
        if invocation_type == "Event":
            threading.Thread(target=run_in_background, args=(event, client_context), daemon=True).start()
            return 202, b"", ()
        try:
            request_id, body, function_error = run(event, client_context)
        finally:
            limit.release()
        headers = [("X-Amz-Executed-Version", EXECUTED_VERSION), ("x-amzn-RequestId", request_id)]
        if len(body) > MAX_PAYLOAD_BYTES:
            body = json.dumps({"errorMessage": f"Response payload size exceeded maximum allowed payload size "
                                               f"({MAX_PAYLOAD_BYTES} bytes).",
                               "errorType": "Function.ResponseSizeTooLarge"}).encode()
            function_error = "Unhandled"
        if function_error:
            headers.append(("X-Amz-Function-Error", function_error))
        return 200, body, headers

    def status():
        return {"function_name": function_name, "in_flight": limit.in_flight,
                "reserved_concurrency": limit.limit, "code_sha256": code_sha256, "pid": os.getpid()}

    def route(environ):
        """(status, body, headers) of one request."""
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        requested = path[len(INVOKE_PREFIX):-len(INVOKE_SUFFIX)]
        if path.startswith(INVOKE_PREFIX) and path.endswith(INVOKE_SUFFIX) and requested:
            if method != "POST":
                raise method_not_allowed(method, ("POST",))
            return invoke(environ, requested)
        if path == STATUS_PATH:
            if method not in ("GET", "HEAD"):
                raise method_not_allowed(method, ("GET", "HEAD"))
            return 200, status(), ()
        raise not_found(path)

    def app(environ, start_response):
        try:
            status_code, body, headers = route(environ)
        except HttpError as error:
            return respond(start_response, error.status, error.body, JSON, error.headers)
        return respond(start_response, status_code, body, JSON, headers)

    return app


def get_args_parser():
    parser = argparse.ArgumentParser(description="Serve the function zip as a local Lambda function.")
    parser.add_argument("--zip", required=True, help="the function zip (build/function.zip)")
    parser.add_argument("--function-dir", required=True, help="where to unpack it (replaced; like /var/task)")
    parser.add_argument("--function-name", default="dog-breeds-local", help="default: dog-breeds-local")
    parser.add_argument("--handler", default="lambda_function.lambda_handler",
                        help="module.function (default lambda_function.lambda_handler)")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=9001, help="default: 9001")
    parser.add_argument("--reserved-concurrency", type=int, default=10,
                        help="invocations in flight at once; one more gets 429 (default 10)")
    parser.add_argument("--timeout", type=int, default=90, help="function timeout in seconds (default 90)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"),
                        help="region in ARNs (default: $AWS_REGION, else us-east-1)")
    return parser


def main(args):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    function_dir = unpack_function_zip(args.zip, args.function_dir)
    code_sha256 = source_code_hash(args.zip)
    logger.info("unpacked %s (CodeSha256 %s) into %s", args.zip, code_sha256, function_dir)

    def factory():
        return create_app(function_dir, args.function_name, args.handler, args.reserved_concurrency,
                          args.region, args.timeout, code_sha256=code_sha256)

    run_gunicorn(factory, {
        "bind": f"{args.host}:{args.port}",
        "workers": 1,                               # one process: the concurrency counter lives in it
        "worker_class": KeepAliveThreadWorker,
        "threads": args.reserved_concurrency + 8,   # room to answer the call over the limit with a 429 at once
        "timeout": args.timeout + 30,
        "graceful_timeout": 30,
        "keepalive": KEEPALIVE_S,                   # callers reuse their connections; idle ones close at SIGTERM
        "accesslog": "-",
        "errorlog": "-",
        "access_log_format": '%(h)s "%(r)s" %(s)s %(B)s %(M)sms',
        "proc_name": f"function-{args.function_name}",
    })


if __name__ == "__main__":
    main(get_args_parser().parse_args())
