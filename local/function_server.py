"""The local Lambda function: gunicorn (one gthread worker) serving the Lambda Invoke API, in front of execution
environments that run the handler in AWS's own runtime interface client (local/execution_environments.py).

It unpacks the same function zip AWS gets (build/function.zip) like Lambda does into /var/task and serves
  POST /2015-03-31/functions/<name>/invocations   Lambda Invoke, so boto3's lambda client works with endpoint_url:
      RequestResponse -> 200 + X-Amz-Executed-Version, the handler's return value as JSON;
      unhandled exception, import error, timeout, runtime exit -> 200 + X-Amz-Function-Error: Unhandled +
      {errorMessage, errorType, ...} as Lambda answers them;
      Event -> 202 (runs in the background); DryRun -> 204;
      more than the reserved concurrency in flight -> 429 TooManyRequestsException
      (Reason ReservedFunctionConcurrentInvocationLimitExceeded) at once, as Lambda does.
  GET  /local/status                              in flight, environments warm and busy, code hash (`invoke status`)
The handler's AWS clients reach the local endpoint through the function's environment variables (AWS_ENDPOINT_URL_*
and dummy credentials, passed with --env by local/stack.py), so the handler itself has no local-only code.

    python -m local.function_server --zip build/function.zip --function-dir .state/function --port 9001
"""

import argparse
import json
import logging
import os
import shutil
import threading
import uuid
import zipfile
from pathlib import Path

from local.execution_environments import (MAX_PAYLOAD_BYTES, EnvironmentPool, FunctionConfig, Throttled,
                                          decode_client_context)
from local.function_settings import terraform_function
from stack_common.function_zip import source_code_hash
from local.gunicorn_app import KeepAliveThreadWorker, run_gunicorn
from local.wsgi import JSON, HttpError, header, method_not_allowed, not_found, read_body, respond

logger = logging.getLogger("local.function")

EXECUTED_VERSION = "$LATEST"
ACCOUNT = "000000000000"
INVOKE_PREFIX, INVOKE_SUFFIX = "/2015-03-31/functions/", "/invocations"   # Lambda Invoke: .../<name>/invocations
STATUS_PATH = "/local/status"
KEEPALIVE_S = 60
_POOLS = []   # the worker's environment pool, stopped by the worker_exit hook


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


def _read_invocation(environ, requested, config):
    """(payload, invocation type, client context) of an Invoke request, or the HttpError Lambda answers it with."""
    if not _names_function(requested, config.name):
        raise _error(404, "ResourceNotFoundException",
                     f"Function not found: arn:aws:lambda:{config.region}:{ACCOUNT}:function:{requested}")
    payload = read_body(environ, MAX_PAYLOAD_BYTES, _payload_too_large)
    try:
        json.loads(payload) if payload else None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _error(400, "InvalidRequestContentException",
                     f"Could not parse request body into json: {error}") from None
    invocation_type = header(environ, "X-Amz-Invocation-Type") or "RequestResponse"
    if invocation_type not in ("RequestResponse", "Event", "DryRun"):
        raise _error(400, "InvalidParameterValueException", f"Unsupported invocation type {invocation_type}")
    client_context = decode_client_context(header(environ, "X-Amz-Client-Context")) \
        if invocation_type != "DryRun" else None
    if client_context is False:
        raise _error(400, "InvalidRequestContentException",
                     "Client context must be a valid Base64-encoded JSON object.")
    return payload, invocation_type, client_context


def create_app(config, reserved_concurrency=10, code_sha256=None):
    """The WSGI app over a new pool of execution environments for `config` (a FunctionConfig)."""
    pool = EnvironmentPool(config, reserved_concurrency)
    _POOLS.append(pool)

    def run_in_background(environment, payload, client_context):
        answer = pool.invoke(environment, payload, client_context)
        if answer.function_error:
            logger.warning("event invocation %s failed: %s", answer.request_id, answer.body[:500])

    def invoke(environ, requested):
        payload, invocation_type, client_context = _read_invocation(environ, requested, config)
        if invocation_type == "DryRun":
            return 204, b"", ()
        try:
            environment = pool.acquire()
        except Throttled:
            raise _error(429, "TooManyRequestsException", "Rate Exceeded.",
                         Reason="ReservedFunctionConcurrentInvocationLimitExceeded") from None
        payload = payload or b"{}"
        if invocation_type == "Event":
            threading.Thread(target=run_in_background, args=(environment, payload, client_context),
                             daemon=True).start()
            return 202, b"", ()
        answer = pool.invoke(environment, payload, client_context)
        headers = [("X-Amz-Executed-Version", EXECUTED_VERSION), ("x-amzn-RequestId", answer.request_id)]
        if answer.function_error:
            headers.append(("X-Amz-Function-Error", answer.function_error))
        return 200, answer.body, headers

    def status():
        return {"function_name": config.name, "code_sha256": code_sha256, "pid": os.getpid(),
                "timeout_s": config.timeout_s, "memory_mb": config.memory_mb, "handler": config.handler,
                **pool.status()}

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


def stop_environments(server=None, worker=None):
    """gunicorn `worker_exit` hook: the environments go with the worker that started them."""
    for pool in _POOLS:
        pool.stop()


def _variable(text):
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def get_args_parser():
    function = terraform_function()
    parser = argparse.ArgumentParser(description="Serve the function zip as a local Lambda function.")
    parser.add_argument("--zip", required=True, help="the function zip (build/function.zip)")
    parser.add_argument("--function-dir", required=True, help="where to unpack it (replaced; like /var/task)")
    parser.add_argument("--function-name", default="dog-breeds-local", help="default: dog-breeds-local")
    parser.add_argument("--handler", default=function.handler, help=f"module.function (default, Terraform's: "
                                                                     f"{function.handler})")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=9001, help="default: 9001")
    parser.add_argument("--reserved-concurrency", type=int, default=function.reserved_concurrency,
                        help="environments running at once; one more event gets 429 (default, Terraform's: "
                             f"{function.reserved_concurrency})")
    parser.add_argument("--timeout", type=float, default=function.timeout_s,
                        help=f"function timeout in seconds (default, Terraform's: {function.timeout_s})")
    parser.add_argument("--memory-size", type=int, default=function.memory_mb,
                        help=f"MB, reported to the function and in REPORT lines (default, Terraform's: "
                             f"{function.memory_mb})")
    parser.add_argument("--env", type=_variable, action="append", default=[], metavar="NAME=VALUE",
                        help="a variable of the function's environment (repeatable)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"),
                        help="region in ARNs (default: $AWS_REGION, else us-east-1)")
    return parser


def main(args):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    function_dir = unpack_function_zip(args.zip, args.function_dir)
    code_sha256 = source_code_hash(args.zip)
    logger.info("unpacked %s (CodeSha256 %s) into %s", args.zip, code_sha256, function_dir)
    config = FunctionConfig(name=args.function_name, task_root=function_dir.resolve(), handler=args.handler,
                            timeout_s=args.timeout, memory_mb=args.memory_size,
                            region=args.region, environment=dict(args.env))

    def factory():
        return create_app(config, args.reserved_concurrency, code_sha256=code_sha256)

    run_gunicorn(factory, {
        "bind": f"{args.host}:{args.port}",
        "workers": 1,                               # one process: the environment pool lives in it
        "worker_class": KeepAliveThreadWorker,
        "threads": args.reserved_concurrency + 8,   # room to answer the call over the limit with a 429 at once
        "timeout": int(args.timeout) + 30,
        "graceful_timeout": 30,
        "keepalive": KEEPALIVE_S,                   # callers reuse their connections; idle ones close at SIGTERM
        "worker_exit": stop_environments,
        "accesslog": "-",
        "errorlog": "-",
        "access_log_format": '%(h)s "%(r)s" %(s)s %(B)s %(M)sms',
        "proc_name": f"function-{args.function_name}",
    })


if __name__ == "__main__":
    main(get_args_parser().parse_args())
