"""Client errors of the inference handler: each carries the HTTP status the caller gets and a short JSON body.

On a SageMaker PyTorch container the serving toolkit turns an exception of its `BaseInferenceToolkitError` family
into a response with that exception's `status_code` and `message`; anything else becomes a 500. Where the toolkit
is not installed (the builtin local endpoint on a machine without it) an equivalent base with the same attributes
is used, so one definition serves both.

The toolkit's own error answer (`Transformer.handle_error`) appends the Python traceback to the message, sets no
Content-Type, and turns every other exception into a 500 carrying that exception's text, among them the
UnicodeDecodeError it raises itself when a JSON body is not UTF-8 (it decodes JSON before input_fn runs). Importing
this module replaces that one step with `answer_toolkit_error`, so the client gets exactly what the local endpoint
answers: the short JSON body, its status, application/json; the trace goes to the log.
"""

import json
import logging
import sys

logger = logging.getLogger(__name__)

ERROR_CONTENT_TYPE = "application/json"

try:  # the toolkit ships in the SageMaker PyTorch inference image (and the local stack's toolkit runtime)
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ToolkitError
except ImportError:  # pragma: no cover - depends on the environment
    class _ToolkitError(Exception):
        """Same constructor and attributes as sagemaker_inference.errors.BaseInferenceToolkitError."""

        def __init__(self, status_code, message, phrase):
            self.status_code = status_code
            self.message = message
            self.phrase = phrase
            super().__init__(status_code, message, phrase)


class InferenceError(_ToolkitError):
    """A request the handler refuses. `message` is the JSON body the client receives; the detail stays short."""

    status_code = 500
    code = "InferenceError"
    phrase = "Internal Server Error"

    def __init__(self, detail):
        self.detail = detail
        body = json.dumps({"error": self.code, "message": detail})
        super().__init__(type(self).status_code, body, type(self).phrase)

    def __str__(self):
        return f"{self.status_code} {self.code}: {self.detail}"


class BadRequestError(InferenceError):
    """The body cannot be understood: malformed JSON, missing field, bad base64, bad top_k."""

    status_code, code, phrase = 400, "BadRequest", "Bad Request"


class PayloadTooLargeError(InferenceError):
    """More bytes or more pixels than the handler accepts."""

    status_code, code, phrase = 413, "PayloadTooLarge", "Payload Too Large"


class UnsupportedMediaTypeError(InferenceError):
    """A Content-Type the handler does not read."""

    status_code, code, phrase = 415, "UnsupportedMediaType", "Unsupported Media Type"


class NotAcceptableError(InferenceError):
    """An Accept type the handler cannot write (only JSON is offered)."""

    status_code, code, phrase = 406, "NotAcceptable", "Not Acceptable"


class UnprocessableImageError(InferenceError):
    """Bytes that are not a readable image (wrong format, truncated, corrupt)."""

    status_code, code, phrase = 422, "NotAnImage", "Unprocessable Entity"


class UrlRefusedError(InferenceError):
    """A URL that may not be fetched (scheme, address, redirects) or whose server answered with an error."""

    status_code, code, phrase = 422, "UrlRefused", "Unprocessable Entity"


class FetchTimeoutError(InferenceError):
    """The image server did not connect or answer within the fetch timeouts.

    A 422, not a 504: the endpoint and its model are fine, the URL the caller chose leads to a server that does not
    answer (the same class as UrlRefused's server that answers an error). SageMaker counts every 5xx of the container
    in Invocation5XXErrors, the blue/green rollback alarm's metric, so a 504 would let any caller roll a deployment
    back with a URL that hangs. The function (lambda_function.py) still answers its caller 504 UpstreamTimeout for
    this code."""

    status_code, code, phrase = 422, "FetchTimeout", "Unprocessable Entity"


class InternalServerError(InferenceError):
    """Anything the handler did not foresee; the client learns nothing about the cause, the log has the trace."""

    status_code, code, phrase = 500, "InternalServerError", "Internal Server Error"

    def __init__(self, detail="the model failed on this request"):
        super().__init__(detail)


def client_error_of(exception):
    """The InferenceError a caller gets for `exception`: itself, a 400 for a body that is not UTF-8, else a 500."""
    if isinstance(exception, InferenceError):
        return exception
    if isinstance(exception, UnicodeDecodeError):
        return BadRequestError(f"body is not valid JSON ({type(exception).__name__})")   # as input_fn words it
    return InternalServerError()


def answer_toolkit_error(context, toolkit_error, trace):
    """Replaces sagemaker_inference's Transformer.handle_error (same arguments, called inside its `except`)."""
    error = client_error_of(sys.exc_info()[1] or toolkit_error)
    if error.status_code >= 500:
        logger.error("request failed: %s\n%s", toolkit_error, trace)
    else:
        logger.info("request refused: %s", error)
    context.set_response_status(code=error.status_code, phrase=error.phrase)
    context.set_response_content_type(0, ERROR_CONTENT_TYPE)
    return [error.message]


try:
    from sagemaker_inference.transformer import Transformer as _Transformer
except ImportError:  # pragma: no cover - depends on the environment
    pass
else:
    _Transformer.handle_error = staticmethod(answer_toolkit_error)
