"""The local SageMaker endpoint: gunicorn + a small WSGI app that serves model.tar.gz as SageMaker does.

Like the SageMaker PyTorch inference container, it unpacks model.tar.gz into a model directory, puts its code/ on
sys.path, imports the handler module (SAGEMAKER_PROGRAM, default inference.py) and answers with its model_fn,
input_fn, predict_fn and output_fn. Routes:
  GET  /ping                              container health check (200 once the model is loaded)
  POST /invocations                       container contract: the handler's status, body and content type
  POST /endpoints/<name>/invocations      SageMaker Runtime InvokeEndpoint, so boto3's sagemaker-runtime client
                                          works with only endpoint_url: 200 + x-Amzn-Invoked-Production-Variant,
                                          or 424 ModelError with OriginalStatusCode/OriginalMessage/LogStreamArn
Each gunicorn worker is one process that loads the model once, runs one request at a time with one torch thread
(so N workers use N cores without oversubscription) and keeps client connections alive between requests;
gunicorn's master replaces a worker that dies or that spends longer than --timeout on one request.

    python -m local.endpoint_server --archive build/model.tar.gz --model-dir .state/endpoint-model --port 8080
"""

import argparse
import importlib
import inspect
import json
import logging
import os
import shutil
import sys
import tarfile
import time
import traceback
from pathlib import Path

from local.gunicorn_app import OneRequestThreadWorker, exit_master_now, exit_worker_now, run_gunicorn
from local.wsgi import (JSON, HttpError, RequestHeaders, header, method_not_allowed, not_found, read_body,
                        respond)

logger = logging.getLogger("local.endpoint")

DEFAULT_PROGRAM = "inference.py"
DEFAULT_VARIANT = "AllTraffic"
HANDLER_FUNCTIONS = ("model_fn", "input_fn", "predict_fn", "output_fn")
MAX_PAYLOAD_BYTES = 25 * 1024 * 1024  # what a real-time endpoint accepts; the handler has its own, lower, limit
KEEPALIVE_S = 60   # longer than the function's calls are apart under any load worth keeping connections for
INVOKE_PREFIX, INVOKE_SUFFIX = "/endpoints/", "/invocations"   # SageMaker Runtime: /endpoints/<name>/invocations
INTERNAL_ERROR_BODY = json.dumps({"error": "InternalServerError", "message": "the model failed on this request"})


def unpack_model_archive(archive, model_dir):
    """Replace `model_dir` with the contents of model.tar.gz (safe extraction: no absolute paths or links out)."""
    model_dir = Path(model_dir)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(model_dir, filter="data")
    if not (model_dir / "code").is_dir():
        raise FileNotFoundError(f"{archive} has no code/ folder; it is not a model archive built by training")
    return model_dir


def load_handler_module(model_dir, program=None):
    """Import code/<SAGEMAKER_PROGRAM> from the model directory, the way the container does."""
    program = program or os.environ.get("SAGEMAKER_PROGRAM", DEFAULT_PROGRAM)
    code_dir = Path(model_dir) / "code"
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    module = importlib.import_module(Path(program).stem)
    missing = [name for name in HANDLER_FUNCTIONS if not callable(getattr(module, name, None))]
    if missing:
        raise AttributeError(f"{code_dir / program} lacks {', '.join(missing)}")
    return module


def _accepts_context(function, positional):
    parameters = inspect.signature(function).parameters.values()
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters) > positional


class RequestContext:
    """The bit of the toolkit's request context a handler reads: request headers, case-insensitively."""

    def __init__(self, headers):
        self._headers = headers

    def get_request_header(self, index, name):
        return self._headers.get(name)


class ModelHost:
    """A handler module and its loaded model; `invoke` runs one request through the four functions."""

    def __init__(self, model_dir, program=None):
        self.module = load_handler_module(model_dir, program)
        self._with_context = {name: _accepts_context(getattr(self.module, name), positional)
                              for name, positional in zip(HANDLER_FUNCTIONS, (1, 2, 2, 2))}
        self.model = self._call("model_fn", str(model_dir), context=None)

    def _call(self, name, *args, context):
        function = getattr(self.module, name)
        return function(*args, context) if self._with_context[name] else function(*args)

    def invoke(self, body, content_type, accept, headers):
        """(status, body, content type) exactly as the container would answer /invocations."""
        context = RequestContext(headers)
        try:
            data = self._call("input_fn", body, content_type, context=context)
            prediction = self._call("predict_fn", data, self.model, context=context)
            result = self._call("output_fn", prediction, accept, context=context)
        except Exception as error:  # the toolkit's rule: a status-carrying error is the client's, the rest a 500
            status = getattr(error, "status_code", None)
            if isinstance(status, int) and 400 <= status < 600:
                logger.info("request refused: %s", error)
                message = getattr(error, "message", str(error))
                return status, message, "application/json"
            logger.error("handler failed:\n%s", traceback.format_exc())
            return 500, INTERNAL_ERROR_BODY, "application/json"
        if isinstance(result, tuple):
            return 200, result[0], result[1]
        return 200, result, accept or "application/json"


def _model_error(endpoint_name, variant, region, status, body, log_path):
    original = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    kind = "client" if status < 500 else "server"
    payload = {
        "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
        "Message": f"Received {kind} error ({status}) from {variant} with message \"{original}\". "
                   f"See the endpoint log {log_path} for more information.",
        "OriginalStatusCode": status,
        "OriginalMessage": original,
        "LogStreamArn": f"arn:aws:logs:{region}:000000000000:log-group:/aws/sagemaker/Endpoints/{endpoint_name}",
    }
    return 424, json.dumps(payload), JSON, [("x-amzn-ErrorType", "ModelError")]


def _payload_too_large():
    return HttpError(413, {"message": f"Request payload exceeds {MAX_PAYLOAD_BYTES} bytes"},
                     headers=[("x-amzn-ErrorType", "ValidationError")])


def create_app(model_dir, endpoint_name, variant=DEFAULT_VARIANT, program=None, torch_threads=1,
               region="us-east-1", log_path="the endpoint log"):
    """The WSGI app of one worker: loads the model once, then serves the routes above."""
    import torch  # each worker process owns its own intra-op pool; one thread per worker avoids oversubscription

    torch.set_num_threads(torch_threads)
    started = time.perf_counter()
    host = ModelHost(model_dir, program)
    logger.info("worker %d loaded the model in %.2f s", os.getpid(), time.perf_counter() - started)
    variant_header = [("x-Amzn-Invoked-Production-Variant", variant)]

    def run_invocation(environ):
        body = read_body(environ, MAX_PAYLOAD_BYTES, _payload_too_large)
        return host.invoke(body, environ.get("CONTENT_TYPE"), header(environ, "Accept"), RequestHeaders(environ))

    def route(environ):
        """(status, body, content type, headers) of one request."""
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                raise method_not_allowed(method, ("GET", "HEAD"))
            return 200, b"", "text/plain", ()
        if path == "/invocations" or path.startswith(INVOKE_PREFIX) and path.endswith(INVOKE_SUFFIX):
            if method != "POST":
                raise method_not_allowed(method, ("POST",))
            if path == "/invocations":
                return (*run_invocation(environ), ())
            name = path[len(INVOKE_PREFIX):-len(INVOKE_SUFFIX)]
            if not name or "/" in name:
                raise not_found(path)
            if name != endpoint_name:
                raise HttpError(400, {"message": f"Endpoint {name} of account 000000000000 not found."},
                                headers=[("x-amzn-ErrorType", "ValidationError")])
            status, body, content_type = run_invocation(environ)
            if status >= 400:
                return _model_error(endpoint_name, variant, region, status, body, log_path)
            return 200, body, content_type, variant_header
        raise not_found(path)

    def app(environ, start_response):
        try:
            status, body, content_type, headers = route(environ)
        except HttpError as error:
            return respond(start_response, error.status, error.body, JSON, error.headers)
        return respond(start_response, status, body, content_type, headers)

    return app


def get_args_parser():
    parser = argparse.ArgumentParser(description="Serve model.tar.gz as a local SageMaker endpoint.")
    parser.add_argument("--archive", required=True, help="model.tar.gz to serve")
    parser.add_argument("--model-dir", required=True, help="where to unpack it (replaced; like /opt/ml/model)")
    parser.add_argument("--endpoint-name", default="dog-breeds-local", help="default: dog-breeds-local")
    parser.add_argument("--variant", default=DEFAULT_VARIANT, help=f"default: {DEFAULT_VARIANT}")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="default: 8080")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, each with the model (default 2)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--timeout", type=int, default=65,
                        help="seconds before a stuck worker is replaced (default 65; SageMaker allows 60)")
    parser.add_argument("--keepalive", type=int, default=KEEPALIVE_S,
                        help=f"seconds an idle client connection is kept open (default {KEEPALIVE_S})")
    parser.add_argument("--region", default="us-east-1", help="region named in error ARNs (default us-east-1)")
    parser.add_argument("--log-path", default="the endpoint log", help="log file named in ModelError messages")
    return parser


def main(args):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.torch_threads))  # before any worker imports torch
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")               # leave the unpacked model untouched
    model_dir = unpack_model_archive(args.archive, args.model_dir)
    logger.info("unpacked %s into %s", args.archive, model_dir)
    # Import the handler (torch, torchvision: seconds) once in the master; forked workers inherit the modules
    # and only run model_fn. Nothing has computed yet, so no thread pool exists to break across the fork.
    started = time.perf_counter()
    load_handler_module(model_dir)
    logger.info("imported the handler in %.2f s", time.perf_counter() - started)

    def factory():
        return create_app(model_dir, args.endpoint_name, args.variant, torch_threads=args.torch_threads,
                          region=args.region, log_path=args.log_path)

    run_gunicorn(factory, {
        "bind": f"{args.host}:{args.port}",
        "workers": args.workers,
        # One request at a time per worker, as a sync worker, but connections are kept alive: the function's
        # botocore client reuses its connections instead of opening one per call.
        "worker_class": OneRequestThreadWorker,
        "threads": 1,
        "keepalive": args.keepalive,
        "timeout": args.timeout,
        "graceful_timeout": 30,     # SageMaker sends SIGKILL 30 s after SIGTERM
        "accesslog": "-",
        "errorlog": "-",
        "access_log_format": '%(p)s %(h)s "%(r)s" %(s)s %(B)s %(M)sms',   # %(p)s: the worker's pid
        "proc_name": f"endpoint-{args.endpoint_name}",
        "worker_exit": exit_worker_now,
        "on_exit": exit_master_now,
    })


if __name__ == "__main__":
    main(get_args_parser().parse_args())
