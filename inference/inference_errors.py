"""Client errors of the inference handler: each carries the HTTP status the caller gets and a short JSON body.

On a SageMaker PyTorch container the serving toolkit turns an exception of its `BaseInferenceToolkitError` family
into a response with that exception's `status_code` and `message`; anything else becomes a 500. Where the toolkit
is not installed (this machine, the local endpoint, tests) an equivalent base with the same attributes is used, so
one definition serves both.
"""

import json

try:  # the toolkit ships in the SageMaker PyTorch inference image, not in our requirements
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ToolkitError
except ImportError:  # pragma: no cover - depends on the image
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
    """The image server did not connect or answer within the fetch timeouts."""

    status_code, code, phrase = 504, "FetchTimeout", "Gateway Timeout"
