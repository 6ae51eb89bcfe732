"""Calling the deployed function the way a user does: boto3's lambda client, for the local and the AWS target.

Only the client differs between targets (endpoint_url for the local function server); the event, the call and
the reading of the answer are the same.
"""

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config

MAX_IMAGE_BYTES = 6 * 1024 * 1024 * 3 // 4 - 1024   # base64 grows 4/3 and the event must stay under 6 MB


class PredictRequestError(ValueError):
    """The user's predict arguments cannot make an event; the message says why."""


@dataclass(frozen=True)
class FunctionAnswer:
    status: int            # the handler's statusCode (or 500 for an unhandled error)
    body: object           # the handler's JSON body, parsed
    function_error: str | None = None


def build_event(url=None, image=None, top_k=5):
    """The event for --url (the original {"url": ...} contract) or --image (base64 of the file)."""
    if bool(url) == bool(image):
        raise PredictRequestError("give exactly one of --url or --image")
    if int(top_k) < 1:
        raise PredictRequestError("--top-k must be at least 1")
    if url:
        return {"url": url, "top_k": int(top_k)}
    path = Path(image)
    if not path.is_file():
        raise PredictRequestError(f"no such image file: {path}")
    data = path.read_bytes()
    if len(data) > MAX_IMAGE_BYTES:
        raise PredictRequestError(f"{path} is {len(data) / 1e6:.1f} MB; the function takes at most "
                                  f"{MAX_IMAGE_BYTES / 1e6:.1f} MB (serve it by URL instead)")
    return {"image": base64.b64encode(data).decode(), "top_k": int(top_k)}


def lambda_client_config(connect_timeout_s=5, max_attempts=3):
    """The function's client as users get it: a read timeout above the endpoint's 60 s, standard retries."""
    return Config(connect_timeout=connect_timeout_s, read_timeout=120,
                  retries={"mode": "standard", "total_max_attempts": max_attempts})


def aws_lambda_client(session):
    """A lambda client of a boto3 session, for the function deployed on AWS."""
    return session.client("lambda", config=lambda_client_config())


def local_lambda_client(settings, max_attempts=3):
    """A lambda client for the local function server (dummy credentials: the local server does not check them)."""
    return boto3.client("lambda", endpoint_url=settings.function_url, region_name=settings.region,
                        aws_access_key_id="local", aws_secret_access_key="local",
                        config=lambda_client_config(connect_timeout_s=2, max_attempts=max_attempts))


def invoke_function(client, function_name, event):
    """Invoke synchronously and read the answer; botocore errors (throttling after retries...) propagate."""
    response = client.invoke(FunctionName=function_name, InvocationType="RequestResponse",
                             Payload=json.dumps(event).encode())
    raw = response["Payload"].read()
    try:
        payload = json.loads(raw or b"null")
    except json.JSONDecodeError:
        return FunctionAnswer(status=502, body=raw.decode(errors="replace"), function_error="InvalidJSON")
    if response.get("FunctionError"):
        return FunctionAnswer(status=500, body=payload, function_error=response["FunctionError"])
    if not isinstance(payload, dict) or "statusCode" not in payload:
        return FunctionAnswer(status=502, body=payload, function_error="UnexpectedAnswer")
    body = payload.get("body")
    try:
        body = json.loads(body) if isinstance(body, str) else body
    except json.JSONDecodeError:
        pass
    return FunctionAnswer(status=int(payload["statusCode"]), body=body)


def describe_failure(answer):
    """One line for a non-200 answer."""
    body = answer.body
    if answer.function_error:
        message = body.get("errorMessage") if isinstance(body, dict) else body
        return f"the function failed ({answer.function_error}): {message}"
    if isinstance(body, dict) and "message" in body:
        return f"{answer.status} {body.get('error', '')}: {body['message']}".replace(" :", ":")
    return f"{answer.status}: {body}"


def format_predictions(body):
    """Lines for the terminal: rank, class name, probability, then the model version."""
    predictions = body.get("predictions", [])
    width = max((len(str(p["class_name"])) for p in predictions), default=10)
    lines = [f"{rank:>2}. {p['class_name']:<{width}}  {100 * p['probability']:6.2f}%"
             for rank, p in enumerate(predictions, 1)]
    lines.append(f"model version {body.get('model_version', '?')}")
    return lines
