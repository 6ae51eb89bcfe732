"""The HTTP face of a local SageMaker endpoint, the same for both runtimes: the container's routes and the thin
SageMaker Runtime InvokeEndpoint route in front of them.

  GET  /ping                              container health check: 200 once a worker has loaded the model
  POST /invocations                       container contract: the model's status, body and content type
  POST /endpoints/<name>/invocations      SageMaker Runtime InvokeEndpoint, so boto3's sagemaker-runtime client
                                          works with only endpoint_url: 200 + x-Amzn-Invoked-Production-Variant,
                                          or 424 ModelError with OriginalStatusCode/OriginalMessage/LogStreamArn

The runtime supplies `invoke(body, content_type, accept, environ) -> (status, body, content type)` (the builtin
runtime runs the handler in-process, the toolkit runtime forwards to TorchServe) and `healthy()`.

Two body limits, each where AWS has it. SageMaker Runtime refuses an InvokeEndpoint body over its own limit with a
413 ValidationError before any container sees it: the InvokeEndpoint route does the same, on both runtimes. Inside
the container TorchServe refuses a body over TS_MAX_REQUEST_SIZE (the container environment's) with its own 413:
on the toolkit runtime TorchServe itself answers it, for /invocations and for what InvokeEndpoint passes on; the
builtin runtime, which has no TorchServe, answers that 413 in its place (`container_max_request_bytes`).
"""

import json

from local.wsgi import JSON, HttpError, discard_body, header, method_not_allowed, not_found, read_body, respond

DEFAULT_VARIANT = "AllTraffic"
INVOKE_PREFIX, INVOKE_SUFFIX = "/endpoints/", "/invocations"   # SageMaker Runtime: /endpoints/<name>/invocations


def _invoke_endpoint_max_bytes():
    """SageMaker Runtime's limit on an InvokeEndpoint body: botocore's model of the service (Body's max)."""
    from botocore.session import get_session

    operation = get_session().get_service_model("sagemaker-runtime").operation_model("InvokeEndpoint")
    return operation.input_shape.members["Body"].metadata["max"]


INVOKE_ENDPOINT_MAX_BYTES = _invoke_endpoint_max_bytes()
TORCHSERVE_TOO_LARGE = (413, b"", None)   # TorchServe's answer to a body over its max_request_size: no body, no type


class _TooLargeForTheContainer(Exception):
    pass


def _too_large_for_invoke_endpoint():
    return HttpError(413, {"message": f"Request payload exceeds {INVOKE_ENDPOINT_MAX_BYTES} bytes"},
                     headers=[("x-amzn-ErrorType", "ValidationError")])


def model_error(endpoint_name, variant, region, status, body, log_path):
    """SageMaker Runtime's answer when the container answers 4xx/5xx: 424 ModelError carrying the original."""
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


def create_front(invoke, healthy, endpoint_name, container_max_request_bytes=None, variant=DEFAULT_VARIANT,
                 region="us-east-1", log_path="the endpoint log"):
    """The WSGI app of the routes above around one runtime's `invoke` and `healthy`; `container_max_request_bytes`:
    the body limit to answer as TorchServe does, None where TorchServe itself is behind `invoke`."""
    variant_header = [("x-Amzn-Invoked-Production-Variant", variant)]

    def container(body, environ):
        if container_max_request_bytes is not None and len(body) > container_max_request_bytes:
            return TORCHSERVE_TOO_LARGE
        return invoke(body, environ.get("CONTENT_TYPE"), header(environ, "Accept"), environ)

    def container_route(environ):
        """/invocations: the container's own port, where only TorchServe's limit applies (TorchServe reads a body
        over it to its end, then answers)."""
        try:
            body = read_body(environ, container_max_request_bytes, _TooLargeForTheContainer)
        except _TooLargeForTheContainer:
            discard_body(environ)
            return TORCHSERVE_TOO_LARGE
        return container(body, environ)

    def route(environ):
        """(status, body, content type, headers) of one request."""
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                raise method_not_allowed(method, ("GET", "HEAD"))
            if not healthy():
                return 503, json.dumps({"status": "Unhealthy", "message": "the model is not loaded yet"}), JSON, ()
            return 200, b"", "text/plain", ()
        if path == "/invocations" or path.startswith(INVOKE_PREFIX) and path.endswith(INVOKE_SUFFIX):
            if method != "POST":
                raise method_not_allowed(method, ("POST",))
            if path == "/invocations":
                return (*container_route(environ), ())
            name = path[len(INVOKE_PREFIX):-len(INVOKE_SUFFIX)]
            if not name or "/" in name:
                raise not_found(path)
            if name != endpoint_name:
                raise HttpError(400, {"message": f"Endpoint {name} of account 000000000000 not found."},
                                headers=[("x-amzn-ErrorType", "ValidationError")])
            body = read_body(environ, INVOKE_ENDPOINT_MAX_BYTES, _too_large_for_invoke_endpoint)
            status, body, content_type = container(body, environ)
            if status >= 400:
                return model_error(endpoint_name, variant, region, status, body, log_path)
            return 200, body, content_type, variant_header
        raise not_found(path)

    def app(environ, start_response):
        try:
            status, body, content_type, headers = route(environ)
        except HttpError as error:
            return respond(start_response, error.status, error.body, JSON, error.headers)
        return respond(start_response, status, body, content_type, headers)

    return app
