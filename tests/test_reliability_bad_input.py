"""Bad input through the running local stack: each request, its expected status and message, and afterwards the
stack is whole (same endpoint workers, function alive) and the next good request still succeeds.

Requests go through real processes with real boto3 clients: events to the function (lambda Invoke), bodies to the
endpoint (sagemaker-runtime InvokeEndpoint). Images by URL come from a loopback server the endpoint may reach
because the stack is deployed with the allow-list 127.0.0.1/32. No answer may be a 5xx except the function's 504
for an image URL that does not answer in time (the endpoint answers that one 422 FetchTimeout: a 5xx there would
count in the rollback alarm's Invocation5XXErrors). No body may carry a stack trace or a file path. The figures go
to build/reliability/bad_input.json.
"""

import base64
import io
import json
import struct
import time

import pytest
from botocore.exceptions import ClientError
from PIL import Image

from inference import MAX_REQUEST_BYTES
from local import stack as local_stack_module
from reliability_testlib import REPO_ROOT, write_report
from serving_testlib import decompression_bomb, image_bytes, png_header_only

FUNCTION = "dog-breeds-local"
ENDPOINT = "dog-breeds-local"
RESULTS = []
LEAK_MARKERS = ("Traceback", 'File "', "/work/", "/tmp/", "/home/", ".py\"", "site-packages", str(REPO_ROOT))


# ------------------------------------------------------------------------------------------------ bad images

def jpeg_declaring(width, height):
    """A small real JPEG whose frame header (SOF0) claims width x height."""
    data = bytearray(image_bytes(size=(64, 48)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def json_url(url):
    """InvokeEndpoint arguments of a JSON {"url": ...} request, as the function sends it."""
    return {"Body": json.dumps({"url": url}).encode(), "ContentType": "application/json"}


def animated_gif():
    frames = [Image.new("P", (96, 64), index) for index in (10, 80, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def b64(data):
    return base64.b64encode(data).decode()


GOOD_JPEG = image_bytes(size=(160, 120))


def noisy_jpeg(size=(320, 240)):
    buffer = io.BytesIO()
    Image.effect_noise(size, 64).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


TRUNCATED_JPEG = noisy_jpeg()[:len(noisy_jpeg()) // 2]   # a whole header, half the scan data
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HTML = b"<!doctype html><html><head><title>Dog</title></head><body><img src='dog.jpg'></body></html>"


# ------------------------------------------------------------------------------------------------ the cases
# (id, channel, request, expected status, expected error code, a fragment of the expected message)
# channel "function": a JSON event; "function-raw": the raw Invoke payload; "endpoint": InvokeEndpoint arguments.
# A request may be a callable of the image server (for URLs it serves).

CASES = [
    # the function's event
    ("malformed JSON payload", "function-raw", b'{"url": "http://x/dog.jpg", ', 400,
     "InvalidRequestContentException", "Could not parse request body into json"),
    ("event is an array", "function", [{"url": "http://x/dog.jpg"}], 400, "BadRequest", "must be a JSON object"),
    ("event is a string", "function", "http://x/dog.jpg", 400, "BadRequest", "must be a JSON object"),
    ("event is null", "function", None, 400, "BadRequest", "must be a JSON object"),
    ("empty event", "function", {}, 400, "BadRequest", 'expected {"url"'),
    ("missing url and image", "function", {"top_k": 3}, 400, "BadRequest", 'expected {"url"'),
    ("unknown field only", "function", {"picture": "dog.jpg"}, 400, "BadRequest", 'expected {"url"'),
    ("both url and image", "function", {"url": "http://x/dog.jpg", "image": b64(GOOD_JPEG)}, 400, "BadRequest",
     'expected {"url"'),
    ("url is a number", "function", {"url": 42}, 400, "BadRequest", '"url" must be a non-empty string'),
    ("url is a list", "function", {"url": ["http://x/dog.jpg"]}, 400, "BadRequest", '"url" must be a non-empty'),
    ("url is blank", "function", {"url": "   "}, 400, "BadRequest", '"url" must be a non-empty string'),
    ("image is a number", "function", {"image": 7}, 400, "BadRequest", '"image" must be a non-empty base64'),
    ("image is empty", "function", {"image": ""}, 400, "BadRequest", '"image" must be a non-empty base64'),
    ("image is not base64", "function", {"image": "this is not base64!"}, 400, "BadRequest", "not valid base64"),
    ("top_k is a word", "function", {"image": b64(GOOD_JPEG), "top_k": "five"}, 400, "BadRequest",
     '"top_k" must be a positive integer'),
    ("top_k is negative", "function", {"image": b64(GOOD_JPEG), "top_k": -1}, 400, "BadRequest",
     '"top_k" must be a positive integer'),
    ("top_k is a boolean", "function", {"image": b64(GOOD_JPEG), "top_k": True}, 400, "BadRequest",
     '"top_k" must be a positive integer'),
    ("top_k is a fraction", "function", {"image": b64(GOOD_JPEG), "top_k": 2.5}, 400, "BadRequest",
     '"top_k" must be a positive integer'),
    ("proxy body is not JSON", "function", {"body": "url=http://x/dog.jpg", "requestContext": {}}, 400,
     "BadRequest", "the request body is not JSON"),
    ("proxy body marked base64 but is not", "function", {"body": "%%%", "isBase64Encoded": True}, 400,
     "BadRequest", "marked base64"),
    ("proxy body is empty", "function", {"body": "", "requestContext": {}}, 400, "BadRequest",
     "the request body is empty"),
    ("proxy body is a number", "function", {"body": 5, "isBase64Encoded": True}, 400, "BadRequest",
     "the request body must be a string"),
    ("proxy query top_k is a word", "function",
     {"body": json.dumps({"image": b64(GOOD_JPEG)}), "queryStringParameters": {"top_k": "all"}}, 400,
     "BadRequest", '"top_k" must be a positive integer'),
    ("huge event over 6 MB", "function-raw",
     json.dumps({"image": "A" * (6 * 1024 * 1024 + 16)}).encode(), 413, "RequestTooLargeException",
     "smaller than"),
    # images sent in the event (the function forwards the bytes; the endpoint decodes them)
    ("non-image bytes", "function", {"image": b64(PDF)}, 422, "NotAnImage", "not an image"),
    ("truncated JPEG", "function", {"image": b64(TRUNCATED_JPEG)}, 422, "NotAnImage", "truncated or corrupt"),
    ("decompression bomb 12000x12000 PNG", "function", {"image": b64(decompression_bomb())}, 413,
     "PayloadTooLarge", "too many pixels"),
    ("20000x20000 PNG header", "function", {"image": b64(png_header_only(20000, 20000))}, 413, "PayloadTooLarge",
     "too many pixels"),
    ("20000x20000 JPEG header", "function", {"image": b64(jpeg_declaring(20000, 20000))}, 413, "PayloadTooLarge",
     "too many pixels"),
    ("1 x 2000 strip", "function", {"image": b64(image_bytes(size=(1, 2000), fmt="PNG"))}, 422, "NotAnImage",
     "not a photo"),
    ("1x1 image is classified", "function", {"image": b64(image_bytes(size=(1, 1), fmt="PNG"))}, 200, None, None),
    ("animated GIF is classified (first frame)", "function", {"image": b64(animated_gif())}, 200, None, None),
    ("CMYK JPEG is classified", "function", {"image": b64(image_bytes(size=(120, 90), mode="CMYK"))}, 200, None,
     None),
    ("16-bit PNG is classified", "function", {"image": b64(image_bytes(size=(120, 90), mode="I;16", fmt="PNG"))},
     200, None, None),
    ("extra field next to a valid request is ignored", "function",
     {"image": b64(GOOD_JPEG), "caption": "my dog"}, 200, None, None),
    # image URLs (served on 127.0.0.1)
    ("url with unicode path", "function", lambda images: {"url": images.url("/chien-ĉ.jpg")}, 200, None, None),
    # URLs that can never be an image URL: the function refuses them before calling the endpoint ...
    ("url with CR LF (header injection)", "function",
     lambda images: {"url": images.url("/dog.jpg") + "\r\nX-Injected: 1"}, 400, "BadRequest",
     "whitespace or control characters"),
    ("url with a NUL character", "function", lambda images: {"url": images.url("/dog\x00.jpg")}, 400,
     "BadRequest", "whitespace or control characters"),
    ("url with a bell character", "function", lambda images: {"url": images.url("/d\x07og.jpg")}, 400,
     "BadRequest", "whitespace or control characters"),
    ("url with a newline in its host", "function", {"url": "http://exa\nmple.com/dog.jpg"}, 400, "BadRequest",
     "whitespace or control characters"),
    ("ftp url", "function", {"url": "ftp://example.com/dog.jpg"}, 400, "BadRequest", "http:// or https://"),
    ("javascript url", "function", {"url": "javascript:alert(1)"}, 400, "BadRequest", "http:// or https://"),
    ("data url", "function", {"url": "data:image/png;base64,iVBORw0KGgo="}, 400, "BadRequest",
     "http:// or https://"),
    ("url without a scheme", "function", {"url": "example.com/dog.jpg"}, 400, "BadRequest", "without a scheme"),
    ("100 kB url", "function", {"url": "https://example.com/" + "d" * 100_000}, 400, "BadRequest",
     "the limit is 2048"),
    ("file url", "function", {"url": "file:///etc/passwd"}, 400, "BadRequest", "http:// or https://"),
    ("url with credentials", "function", lambda images: {"url": images.url("/dog.jpg", host="user:pw@127.0.0.1")},
     400, "BadRequest", "user info"),
    ("url without host", "function", {"url": "http:///dog.jpg"}, 400, "BadRequest", "no host"),
    ("url with port out of range", "function", {"url": "http://127.0.0.1:99999/dog.jpg"}, 400, "BadRequest",
     "not a valid URL"),
    # ... and the endpoint, called directly, still refuses them itself
    ("JSON url with CR LF", "endpoint", lambda images: json_url(images.url("/dog.jpg") + "\r\nX-Injected: 1"),
     422, "UrlRefused", "could not fetch"),
    ("JSON url with a NUL character", "endpoint", lambda images: json_url(images.url("/dog\x00.jpg")), 422,
     "UrlRefused", "could not fetch"),
    ("JSON file url", "endpoint", json_url("file:///etc/passwd"), 422, "UrlRefused", "only http and https"),
    ("JSON url with credentials", "endpoint",
     lambda images: json_url(images.url("/dog.jpg", host="user:pw@127.0.0.1")), 422, "UrlRefused", "credentials"),
    ("JSON url without host", "endpoint", json_url("http:///dog.jpg"), 422, "UrlRefused", "no host"),
    ("JSON url with port out of range", "endpoint", json_url("http://127.0.0.1:99999/dog.jpg"), 422, "UrlRefused",
     "malformed url"),
    ("url that never answers", "function", lambda images: {"url": images.url("/hang/dog.jpg")}, 504,
     "UpstreamTimeout", "did not answer in time"),
    ("JSON url that never answers is a 4xx at the endpoint", "endpoint",
     lambda images: json_url(images.url("/hang/dog.jpg")), 422, "FetchTimeout", "did not answer within"),
    ("url answers 404", "function", lambda images: {"url": images.url("/missing.jpg")}, 422, "UrlRefused",
     "HTTP 404"),
    ("url is an HTML page", "function", lambda images: {"url": images.url("/page.html")}, 422, "NotAnImage",
     "not an image"),
    ("url is a redirect loop", "function", lambda images: {"url": images.url("/loop")}, 422, "UrlRefused",
     "more than 3 redirects"),
    ("url over 10 MB", "function", lambda images: {"url": images.url("/big.jpg")}, 413, "PayloadTooLarge",
     "the limit is"),
    # the endpoint's own contract
    ("wrong content type", "endpoint", {"Body": GOOD_JPEG, "ContentType": "text/plain"}, 415,
     "UnsupportedMediaType", "content type text/plain is not supported"),
    ("xml content type", "endpoint", {"Body": b"<dog/>", "ContentType": "application/xml"}, 415,
     "UnsupportedMediaType", "is not supported"),
    ("no content type", "endpoint", {"Body": GOOD_JPEG}, 415, "UnsupportedMediaType", "is not supported"),
    ("unacceptable Accept", "endpoint", {"Body": GOOD_JPEG, "ContentType": "image/jpeg", "Accept": "image/png"},
     406, "NotAcceptable", "cannot answer in image/png"),
    ("empty body", "endpoint", {"Body": b"", "ContentType": "image/jpeg"}, 400, "BadRequest", "body is empty"),
    ("malformed JSON body", "endpoint", {"Body": b'{"url": ', "ContentType": "application/json"}, 400,
     "BadRequest", "not valid JSON"),
    ("JSON body not UTF-8", "endpoint", {"Body": b'{"url": "\xff\xfe"}', "ContentType": "application/json"},
     400, "BadRequest", "not valid JSON"),
    ("JSON url of the wrong type", "endpoint", {"Body": b'{"url": {"href": "x"}}',
                                                "ContentType": "application/json"},
     400, "BadRequest", '"url" must be a non-empty string'),
    ("JSON image not base64", "endpoint", {"Body": b'{"image": "@@@"}', "ContentType": "application/json"}, 400,
     "BadRequest", "not valid base64"),
    ("JSON top_k zero", "endpoint",
     {"Body": json.dumps({"image": b64(GOOD_JPEG), "top_k": 0}).encode(), "ContentType": "application/json"},
     400, "BadRequest", "top_k in the body must be a positive integer"),
    ("custom attribute top_k is a word", "endpoint",
     {"Body": GOOD_JPEG, "ContentType": "image/jpeg", "CustomAttributes": "top_k=many"}, 400, "BadRequest",
     "top_k in X-Amzn-SageMaker-Custom-Attributes"),
    ("a body of exactly the 6 MiB limit reaches the model", "endpoint",
     {"Body": b"\xff\xd8" + bytes(MAX_REQUEST_BYTES - 2), "ContentType": "image/jpeg"}, 422, "NotAnImage", None),
    ("one byte over the 6 MiB limit", "endpoint", {"Body": bytes(MAX_REQUEST_BYTES + 1), "ContentType": "image/jpeg"},
     413, "ValidationError", f"Request payload exceeds {MAX_REQUEST_BYTES} bytes"),
]


# ------------------------------------------------------------------------------------------------ running them

@pytest.fixture(scope="module")
def stack(local_stack):
    images = local_stack.images
    images.image("/dog.jpg", GOOD_JPEG)
    images.image("/chien-%C4%89.jpg", GOOD_JPEG)
    images.image("/big.jpg", GOOD_JPEG + bytes(11 * 1024 * 1024))
    images.routes["/page.html"] = (200, {"Content-Type": "text/html; charset=utf-8"}, HTML)
    images.redirect("/loop", "/loop")
    yield local_stack
    write_report("bad_input", {
        "requests": len(RESULTS),
        "by_status": {str(status): sum(1 for r in RESULTS if r["status"] == status)
                      for status in sorted({r["status"] for r in RESULTS})},
        "server_errors_other_than_the_defined_504": sum(1 for r in RESULTS if r["status"] >= 500
                                                       and r["status"] != 504),
        "good_requests_after_each": sum(1 for r in RESULTS if r["next_good_status"] is not None),
        "good_requests_failed": sum(1 for r in RESULTS if r["next_good_status"] not in (None, 200)),
        "endpoint_worker_changes": sum(1 for r in RESULTS if r["workers_changed"]),
        "max_latency_ms": max((r["ms"] for r in RESULTS), default=0),
        "cases": RESULTS})


def endpoint_workers(stack):
    record = json.loads((stack.settings.state_dir / "stack.json").read_text())["endpoint"]
    return sorted(local_stack_module.endpoint_workers(record))


def send(stack, channel, request):
    """(status, error code, message) of one request, as the caller sees it."""
    if callable(request):
        request = request(stack.images)
    try:
        if channel == "endpoint":
            response = stack.endpoint.invoke_endpoint(EndpointName=ENDPOINT, **request)
            response["Body"].read()
            return 200, None, None
        payload = request if channel == "function-raw" else json.dumps(request).encode()
        response = stack.function.invoke(FunctionName=FUNCTION, Payload=payload)
    except ClientError as error:
        answer = error.response
        if answer.get("Error", {}).get("Code") == "ModelError":   # the container's own status and body
            body = json.loads(answer["OriginalMessage"])
            return answer["OriginalStatusCode"], body["error"], body["message"]
        return (answer["ResponseMetadata"]["HTTPStatusCode"], answer["Error"]["Code"],
                answer["Error"].get("Message", ""))
    raw = response["Payload"].read().decode()
    assert "FunctionError" not in response, f"the function raised: {raw}"
    answer = json.loads(raw)
    assert answer["headers"] == {"Content-Type": "application/json"}
    body = json.loads(answer["body"])
    if answer["statusCode"] == 200:
        return 200, None, None
    for marker in LEAK_MARKERS:
        assert marker not in answer["body"], f"the answer leaks {marker!r}: {answer['body']}"
    return answer["statusCode"], body["error"], body["message"]


@pytest.mark.parametrize("channel, request_, status, code, fragment",
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_request_gets_its_status_and_the_stack_stays_whole(stack, request, channel, request_, status, code,
                                                               fragment):
    workers = endpoint_workers(stack)
    started = time.perf_counter()
    answer = send(stack, channel, request_)
    result = {"case": request.node.callspec.id, "status": answer[0], "error": answer[1],
              "ms": round((time.perf_counter() - started) * 1000, 1), "workers_changed": None,
              "next_good_status": None}
    RESULTS.append(result)
    assert answer[:2] == (status, code), answer
    if fragment:
        assert fragment in answer[2], answer
        for marker in LEAK_MARKERS:
            assert marker not in answer[2], f"the message leaks {marker!r}: {answer[2]}"
    result["workers_changed"] = endpoint_workers(stack) != workers
    result["next_good_status"] = send(stack, "function", {"image": b64(GOOD_JPEG), "top_k": 1})[0]
    assert not result["workers_changed"], "an endpoint worker died or was replaced"
    assert result["next_good_status"] == 200
