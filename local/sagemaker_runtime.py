"""The HTTP face of a local SageMaker endpoint, the same for both runtimes: the container's routes and the thin
SageMaker Runtime InvokeEndpoint route in front of them.

  GET  /ping                              container health check: 200 once a worker has loaded the model
  POST /invocations                       container contract: the model's status, body and content type
  POST /endpoints/<name>/invocations      SageMaker Runtime InvokeEndpoint, so boto3's sagemaker-runtime client
                                          works with only endpoint_url: 200 + x-Amzn-Invoked-Production-Variant,
                                          or 424 ModelError with OriginalStatusCode/OriginalMessage/LogStreamArn

The runtime supplies `invoke(body, content_type, accept, environ) -> (status, body, content type)` (the builtin
runtime runs the handler in-process, the toolkit runtime forwards to TorchServe) and `healthy()`.
"""

import json

from local.wsgi import JSON, HttpError, header, method_not_allowed, not_found, read_body, respond

DEFAULT_VARIANT = "AllTraffic"
INVOKE_PREFIX, INVOKE_SUFFIX = "/endpoints/", "/invocations"   # SageMaker Runtime: /endpoints/<name>/invocations


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


def create_front(invoke, healthy, endpoint_name, max_request_bytes, variant=DEFAULT_VARIANT, region="us-east-1",
                 log_path="the endpoint log"):
    """The WSGI app of the routes above around one runtime's `invoke` and `healthy`."""
    variant_header = [("x-Amzn-Invoked-Production-Variant", variant)]

    def validation_error_too_large():
        return HttpError(413, {"message": f"Request payload exceeds {max_request_bytes} bytes"},
                         headers=[("x-amzn-ErrorType", "ValidationError")])

    def container_too_large():   # what TorchServe answers a body over its max_request_size: 413, no body
        return HttpError(413, b"", headers=[])

    def run_invocation(environ, too_large):
        body = read_body(environ, max_request_bytes, too_large)
        return invoke(body, environ.get("CONTENT_TYPE"), header(environ, "Accept"), environ)

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
                return (*run_invocation(environ, container_too_large), ())
            name = path[len(INVOKE_PREFIX):-len(INVOKE_SUFFIX)]
            if not name or "/" in name:
                raise not_found(path)
            if name != endpoint_name:
                raise HttpError(400, {"message": f"Endpoint {name} of account 000000000000 not found."},
                                headers=[("x-amzn-ErrorType", "ValidationError")])
            status, body, content_type = run_invocation(environ, validation_error_too_large)
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
