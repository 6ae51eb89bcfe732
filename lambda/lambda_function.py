"""Lambda function in front of the SageMaker endpoint: which dog breed does this image show?

Events it accepts:
  {"url": "https://.../dog.jpg"}            the original direct invocation (optional "top_k")
  {"image": "<base64 image bytes>"}         a local image (optional "top_k")
  API Gateway (REST or HTTP API) and function-URL proxy events whose body is one of the above as JSON, possibly
  base64-encoded; "top_k" may also be a query string parameter.
It answers {"statusCode", "headers": {"Content-Type": "application/json"}, "body": "<json>"}: 200 with the
endpoint's top-k answer, 400 for a malformed event (a "url" that can never name an image on the web included:
not http(s), no host, user info, whitespace or control characters, over 2,048 characters), the endpoint's own 4xx
for a bad image or a URL it will not fetch, 429 when the endpoint throttles, 502 when it fails, 504 when it or the
image URL it fetches times out.

Environment (Terraform sets it): ENDPOINT_NAME (required); LOG_LEVEL (default INFO); ENDPOINT_CONNECT_TIMEOUT_S
(default 2) and ENDPOINT_READ_TIMEOUT_S (default 65: a SageMaker container has 60 s to answer). Only boto3 is used, which the
Lambda Python runtime ships, so the function zip holds this file alone.
"""

import base64
import binascii
import json
import logging
import os
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError,
                                 ReadTimeoutError)

ENDPOINT_NAME = os.environ.get("ENDPOINT_NAME", "")
JSON = "application/json"
IMAGE = "application/x-image"
URL_SCHEMES = ("http", "https")
MAX_URL_CHARS = 2048   # what browsers, CDNs and the sitemap protocol keep URLs under
THROTTLING_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException", "SlowDown"}
UNAVAILABLE_CODES = {"ServiceUnavailable", "ModelNotReadyException"}
# The endpoint's error code for an image URL whose server did not answer (inference_errors.FetchTimeoutError). The
# endpoint answers it as a 422, so that it never counts in Invocation5XXErrors, the rollback alarm's metric.
FETCH_TIMEOUT_CODE = "FetchTimeout"
EXPECTED_EVENT = ('expected {"url": "https://..."} or {"image": "<base64>"} (optional "top_k"), directly or as '
                  "the JSON body of an API Gateway / function URL request")

logger = logging.getLogger("dog_breeds.function")
logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())

# One client per execution environment. Standard retry mode retries throttling and transient errors with
# backoff; one retry at most, because each attempt may wait the full read timeout.
runtime = boto3.client("sagemaker-runtime", config=Config(
    connect_timeout=float(os.environ.get("ENDPOINT_CONNECT_TIMEOUT_S", "2")),
    read_timeout=float(os.environ.get("ENDPOINT_READ_TIMEOUT_S", "65")),
    retries={"mode": "standard", "total_max_attempts": 2},
))


def log(level, message, request_id, **fields):
    """One JSON object per line: a fixed message, the request id and the variables as fields."""
    logger.log(level, json.dumps({"level": logging.getLevelName(level), "message": message,
                                  "request_id": request_id, **fields}, default=str))


class BadEvent(ValueError):
    """The event is not a request this function understands; the text goes back to the caller in a 400."""


@dataclass(frozen=True)
class PredictionRequest:
    url: str | None = None
    image: bytes | None = None
    top_k: int | None = None


def _top_k(value):
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise BadEvent('"top_k" must be a positive integer')
    try:
        top_k = int(value)
    except (TypeError, ValueError):
        raise BadEvent('"top_k" must be a positive integer') from None
    if top_k < 1:
        raise BadEvent('"top_k" must be a positive integer')
    return top_k


def _proxy_payload(event):
    body = event.get("body")
    if body is None or body == "":
        raise BadEvent(f"the request body is empty: {EXPECTED_EVENT}")
    if not isinstance(body, str):
        raise BadEvent(f"the request body must be a string (JSON text, or base64 of it): {EXPECTED_EVENT}")
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise BadEvent("the request body is marked base64 but is not base64-encoded UTF-8") from None
    try:
        payload = json.loads(body)
    except (TypeError, json.JSONDecodeError):
        raise BadEvent(f"the request body is not JSON: {EXPECTED_EVENT}") from None
    query = event.get("queryStringParameters")
    query = query if isinstance(query, dict) else {}    # API Gateway sends an object or null
    if isinstance(payload, dict) and "top_k" not in payload and "top_k" in query:
        payload = {**payload, "top_k": query["top_k"]}
    return payload


def _image_url(url):
    """The URL if it can name an image on the web; else BadEvent, before anything is sent to the endpoint (which
    keeps its own checks of where the URL leads)."""
    if len(url) > MAX_URL_CHARS:
        raise BadEvent(f'"url" is {len(url)} characters long; the limit is {MAX_URL_CHARS}')
    if any(char.isspace() or unicodedata.category(char) == "Cc" for char in url):
        raise BadEvent('"url" must not contain whitespace or control characters (percent-encode them)')
    try:
        parts = urlsplit(url)
        parts.port   # raises ValueError for a port that is not a number in 0-65535
    except ValueError as error:
        raise BadEvent(f'"url" is not a valid URL: {error}') from None
    if parts.scheme.lower() not in URL_SCHEMES:
        scheme = f"{parts.scheme}:" if parts.scheme else "one without a scheme"
        raise BadEvent(f'"url" must be an http:// or https:// URL, not {scheme}')
    if "@" in parts.netloc:
        raise BadEvent('"url" must not carry user info (user:password@)')
    if not parts.hostname:
        raise BadEvent('"url" has no host')
    return url


def parse_event(event):
    """The event as a PredictionRequest; every way it can be malformed raises BadEvent here."""
    if not isinstance(event, dict):
        raise BadEvent(f"the event must be a JSON object: {EXPECTED_EVENT}")
    payload = _proxy_payload(event) if ("body" in event or "requestContext" in event) else event
    if not isinstance(payload, dict) or ("url" in payload) == ("image" in payload):
        raise BadEvent(EXPECTED_EVENT)
    top_k = _top_k(payload.get("top_k"))
    if "url" in payload:
        url = payload["url"]
        if not isinstance(url, str) or not url.strip():
            raise BadEvent('"url" must be a non-empty string')
        return PredictionRequest(url=_image_url(url.strip()), top_k=top_k)
    image = payload["image"]
    if not isinstance(image, str) or not image:
        raise BadEvent('"image" must be a non-empty base64 string')
    try:
        return PredictionRequest(image=base64.b64decode(image, validate=True), top_k=top_k)
    except (binascii.Error, ValueError):
        raise BadEvent('"image" is not valid base64') from None


def url_for_log(url):
    """scheme://host/path of a URL: presigned URLs carry credentials in the query (X-Amz-Credential, -Signature,
    -Security-Token) and any URL may carry user:password@; neither belongs in CloudWatch Logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(malformed url)"
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"


def respond(status, body):
    return {"statusCode": status, "headers": {"Content-Type": JSON},
            "body": body if isinstance(body, str) else json.dumps(body)}


def _error(status, code, message):
    return respond(status, {"error": code, "message": message})


def invoke_endpoint(request):
    """Send the request to the endpoint; returns the body it answered."""
    if request.url is not None:
        payload = {"url": request.url}
        if request.top_k is not None:
            payload["top_k"] = request.top_k
        arguments = {"Body": json.dumps(payload).encode(), "ContentType": JSON}
    else:
        arguments = {"Body": request.image, "ContentType": IMAGE}
        if request.top_k is not None:
            arguments["CustomAttributes"] = f"top_k={request.top_k}"
    response = runtime.invoke_endpoint(EndpointName=ENDPOINT_NAME, Accept=JSON, **arguments)
    return response["Body"].read().decode("utf-8")


def _model_error_response(error, request_id):
    """The container answered 4xx/5xx: a client mistake keeps its status and message; our failure is a 502."""
    original_status = int(error.response.get("OriginalStatusCode") or 500)
    original_message = error.response.get("OriginalMessage") or ""
    log(logging.WARNING, "endpoint returned an error", request_id, original_status=original_status,
        original_message=original_message[:500], log_stream=error.response.get("LogStreamArn"))
    try:
        body = json.loads(original_message)
    except json.JSONDecodeError:
        body = None
    code = body.get("error") if isinstance(body, dict) else None
    if code == FETCH_TIMEOUT_CODE:   # a 422 (models before it: a 504); to our caller the upstream timed out
        return _error(504, "UpstreamTimeout", "the image URL did not answer in time")
    if 400 <= original_status < 500:
        if code is not None:
            return respond(original_status, body)
        return _error(original_status, "BadRequest", original_message[:500] or "the model refused the request")
    return _error(502, "ModelError", "the model failed to answer; see the endpoint logs")


def lambda_handler(event, context):
    request_id = getattr(context, "aws_request_id", None)
    try:
        request = parse_event(event)
    except BadEvent as error:
        log(logging.INFO, "bad event", request_id, reason=str(error))
        return _error(400, "BadRequest", str(error))
    if not ENDPOINT_NAME:
        log(logging.ERROR, "ENDPOINT_NAME is not set", request_id)
        return _error(500, "Misconfigured", "the function has no ENDPOINT_NAME")
    log(logging.INFO, "invoking endpoint", request_id, endpoint=ENDPOINT_NAME, url=url_for_log(request.url) if request.url else None,
        image_bytes=len(request.image) if request.image is not None else None, top_k=request.top_k)
    try:
        body = invoke_endpoint(request)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "ModelError":
            return _model_error_response(error, request_id)
        log(logging.WARNING, "endpoint call failed", request_id, code=code, status=status, error=str(error))
        if code in THROTTLING_CODES or status == 429:
            return _error(429, "Throttled", "the endpoint is busy; retry later")
        if code in UNAVAILABLE_CODES or status == 503:
            return _error(503, "Unavailable", "the endpoint is not ready; retry later")
        return _error(502, "EndpointError", "the endpoint call failed; see the function logs")
    except (ReadTimeoutError, ConnectTimeoutError) as error:
        log(logging.WARNING, "endpoint timed out", request_id, error=str(error))
        return _error(504, "EndpointTimeout", "the endpoint did not answer in time")
    except (EndpointConnectionError, BotoCoreError) as error:
        log(logging.ERROR, "endpoint unreachable", request_id, error=str(error))
        return _error(502, "EndpointError", "the endpoint could not be reached")
    log(logging.INFO, "prediction returned", request_id)
    return respond(200, body)
