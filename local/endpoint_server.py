"""The local SageMaker endpoint's builtin runtime: gunicorn + plain WSGI, serving model.tar.gz as SageMaker does.

The stack runs it where Java is missing (local.endpoint_runtime: builtin, or auto without Java); elsewhere the
endpoint runs on AWS's own serving stack (local/toolkit_endpoint.py). Like the SageMaker PyTorch inference
container, it unpacks model.tar.gz into a model directory, puts its code/ on sys.path, imports the handler module
(SAGEMAKER_PROGRAM, default inference.py) and answers with its model_fn, input_fn, predict_fn and output_fn; the
routes are local/sagemaker_runtime.py's. Each gunicorn worker is one process that loads the model once, runs one
request at a time with OMP_NUM_THREADS torch threads (one by default, so N workers use N cores without
oversubscription) and keeps client connections alive; gunicorn's master replaces a worker that dies or that spends
longer than --timeout on one request.

    python -m local.endpoint_server --archive build/model.tar.gz --model-dir .state/endpoint-model --port 8080
"""

import argparse
import importlib
import inspect
import logging
import os
import shutil
import sys
import tarfile
import time
import traceback
from pathlib import Path

from local.gunicorn_app import OneRequestThreadWorker, exit_master_now, exit_worker_now, run_gunicorn
from local.sagemaker_runtime import DEFAULT_VARIANT, create_front

logger = logging.getLogger("local.endpoint")

DEFAULT_PROGRAM = "inference.py"
HANDLER_FUNCTIONS = ("model_fn", "input_fn", "predict_fn", "output_fn")
KEEPALIVE_S = 60   # longer than the function's calls are apart under any load worth keeping connections for
ERRORS_MODULE = "inference_errors"   # code/inference_errors.py: the handler's errors and the rule both runtimes answer by


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
    """The part of TorchServe's request context (ts.context.Context) a handler reads: the request's headers through
    request_processor[0].get_request_properties(), and system_properties (the worker's gpu_id)."""

    def __init__(self, headers=None, gpu_id=None):
        self.request_processor = [self]
        self.system_properties = {"gpu_id": gpu_id}
        self._headers = headers or {}

    def get_request_properties(self):
        return self._headers


def _headers_of(environ):
    """The request's headers by their HTTP names, as TorchServe hands them to a handler."""
    headers = {name[5:].replace("_", "-").title(): value for name, value in environ.items()
               if name.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    return headers


class ModelHost:
    """A handler module and its loaded model; `invoke` runs one request through the four functions."""

    def __init__(self, model_dir, program=None):
        self.module = load_handler_module(model_dir, program)
        self.errors = importlib.import_module(ERRORS_MODULE)   # from code/, which load_handler_module put on sys.path
        self._with_context = {name: _accepts_context(getattr(self.module, name), positional)
                              for name, positional in zip(HANDLER_FUNCTIONS, (1, 2, 2, 2))}
        self.model = self._call("model_fn", str(model_dir), context=RequestContext())

    def _call(self, name, *args, context):
        function = getattr(self.module, name)
        return function(*args, context) if self._with_context[name] else function(*args)

    def invoke(self, body, content_type, accept, headers):
        """(status, body, content type) exactly as the container would answer /invocations; `headers` is a dict."""
        context = RequestContext(headers)
        try:
            data = self._call("input_fn", body, content_type, context=context)
            prediction = self._call("predict_fn", data, self.model, context=context)
            result = self._call("output_fn", prediction, accept, context=context)
        except Exception as exception:  # answered as the toolkit runtime answers it (inference_errors.client_error_of)
            error = self.errors.client_error_of(exception)
            if error.status_code >= 500:
                logger.error("handler failed:\n%s", traceback.format_exc())
            else:
                logger.info("request refused: %s", error)
            return error.status_code, error.message, self.errors.ERROR_CONTENT_TYPE
        if isinstance(result, tuple):
            return 200, result[0], result[1]
        return 200, result, accept or "application/json"


def create_app(model_dir, endpoint_name, variant=DEFAULT_VARIANT, program=None, region="us-east-1",
               log_path="the endpoint log", max_request_bytes=None):
    """The WSGI app of one worker: loads the model once, then serves local/sagemaker_runtime.py's routes."""
    started = time.perf_counter()
    host = ModelHost(model_dir, program)
    logger.info("worker %d loaded the model in %.2f s", os.getpid(), time.perf_counter() - started)

    def invoke(body, content_type, accept, environ):
        return host.invoke(body, content_type, accept, _headers_of(environ))

    return create_front(invoke, lambda: True, endpoint_name, max_request_bytes, variant=variant, region=region,
                        log_path=log_path)   # no TorchServe here: the front answers its body limit


def get_args_parser():
    parser = argparse.ArgumentParser(description="Serve model.tar.gz as a local SageMaker endpoint.")
    parser.add_argument("--archive", required=True, help="model.tar.gz to serve")
    parser.add_argument("--model-dir", required=True, help="where to unpack it (replaced; like /opt/ml/model)")
    parser.add_argument("--endpoint-name", default="dog-breeds-local", help="default: dog-breeds-local")
    parser.add_argument("--variant", default=DEFAULT_VARIANT, help=f"default: {DEFAULT_VARIANT}")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="default: 8080")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, each with the model (default 2)")
    parser.add_argument("--max-request-bytes", type=int, required=True,
                        help="the container's body limit, answered as TorchServe answers it (the container "
                             "environment's TS_MAX_REQUEST_SIZE)")
    parser.add_argument("--timeout", type=int, default=65,
                        help="seconds before a stuck worker is replaced (default 65; SageMaker allows 60)")
    parser.add_argument("--keepalive", type=int, default=KEEPALIVE_S,
                        help=f"seconds an idle client connection is kept open (default {KEEPALIVE_S})")
    parser.add_argument("--region", default="us-east-1", help="region named in error ARNs (default us-east-1)")
    parser.add_argument("--log-path", default="the endpoint log", help="log file named in ModelError messages")
    return parser


def main(args):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")               # leave the unpacked model untouched
    model_dir = unpack_model_archive(args.archive, args.model_dir)
    logger.info("unpacked %s into %s", args.archive, model_dir)
    # Import the handler (torch, torchvision: seconds) once in the master; forked workers inherit the modules
    # and only run model_fn. Nothing has computed yet, so no thread pool exists to break across the fork.
    started = time.perf_counter()
    load_handler_module(model_dir)
    logger.info("imported the handler in %.2f s", time.perf_counter() - started)

    def factory():
        return create_app(model_dir, args.endpoint_name, args.variant, region=args.region, log_path=args.log_path,
                          max_request_bytes=args.max_request_bytes)

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
