"""The little the two local servers need between gunicorn and their handlers: read a body, answer, route.

The servers answer a handful of routes, and each request also passes through botocore twice and through the
model; a web framework's request and response objects, context and routing cost a few tenths of a millisecond
of CPU per request on the 2-core build machine, which the stack's own overhead cannot spare. gunicorn stays the
HTTP server; this is plain WSGI.
"""

import json
from http import HTTPStatus

JSON = "application/json"
CHUNK_BYTES = 64 * 1024   # what one read of a body of unknown length asks for (gunicorn's readers need a size)


class HttpError(Exception):
    """An answer that ends the request early: status, JSON body, extra headers."""

    def __init__(self, status, body, headers=()):
        super().__init__(status)
        self.status = status
        self.body = body if isinstance(body, (bytes, str)) else json.dumps(body)
        self.headers = list(headers)


def status_line(status):
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def respond(start_response, status, body=b"", content_type=JSON, headers=()):
    """Start the response and return its body as the WSGI iterable (Content-Length set, so keep-alive works);
    no Content-Type header when `content_type` is None."""
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = json.dumps(body).encode()
    typed = [("Content-Type", content_type)] if content_type is not None else []
    start_response(status_line(status), [*typed, ("Content-Length", str(len(body))), *headers])
    return [body]


def header(environ, name):
    """A request header by its HTTP name, case-insensitively, as WSGI stores it."""
    key = name.upper().replace("-", "_")
    if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        key = "HTTP_" + key
    return environ.get(key)


def read_body(environ, limit=None, too_large=None):
    """The request body; `too_large()` builds the exception raised when it is over `limit` bytes (None: no limit).

    A declared Content-Length over the limit is refused before anything is read; a chunked body is read up to
    one byte past the limit.
    """
    stream = environ["wsgi.input"]
    # gunicorn's wsgi.input (http.body.Body) gathers read(n) 1 KiB at a time, copying its socket buffer at each
    # step: 0.35 ms for a 54 KB event on the build machine, where its reader underneath (Content-Length, chunked or
    # to-EOF) takes 0.03 ms. Nothing has been read from the body yet, so reading from that reader loses nothing.
    stream = getattr(stream, "reader", stream)
    length = environ.get("CONTENT_LENGTH")
    if length:
        length = int(length)   # gunicorn has already refused a malformed Content-Length with a 400
        if limit is not None and length > limit:
            raise too_large()
        return stream.read(length)
    if limit is None:
        return b"".join(iter(lambda: stream.read(CHUNK_BYTES), b""))
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise too_large()
    return body


def discard_body(environ):
    """Read what is left of the request body and drop it, so the client can finish sending and read the answer."""
    stream = environ["wsgi.input"]
    stream = getattr(stream, "reader", stream)
    for _ in iter(lambda: stream.read(CHUNK_BYTES), b""):
        pass


def not_found(path):
    return HttpError(404, {"message": f"no route {path}"})


def method_not_allowed(method, allowed):
    return HttpError(405, {"message": f"{method} is not allowed here; use {', '.join(allowed)}"},
                     headers=[("Allow", ", ".join(allowed))])
