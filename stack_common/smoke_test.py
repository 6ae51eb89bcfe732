"""The smoke test every deploy ends with: one prediction through the function, as `invoke predict` makes it."""

import base64
import io
import time

import botocore.exceptions
from PIL import Image, ImageDraw

from stack_common.function_client import describe_failure, invoke_function

TOP_K = 3


class SmokeTestFailed(RuntimeError):
    """The function did not answer 200; the message is one line."""


def smoke_image():
    """A small JPEG any model can classify: what the smoke test and the load test send."""
    image = Image.new("RGB", (320, 240), (120, 160, 90))
    ImageDraw.Draw(image).ellipse((90, 50, 230, 190), fill=(200, 60, 50))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def smoke_event(url=None):
    """The event: `url` for the endpoint to fetch when given, else the smoke image inline."""
    if url:
        return {"url": url, "top_k": TOP_K}
    return {"image": base64.b64encode(smoke_image()).decode(), "top_k": TOP_K}


def run_smoke_test(client, function_name, event=None):
    """Invoke the function once; returns (answer, seconds) or raises SmokeTestFailed."""
    started = time.perf_counter()
    try:
        answer = invoke_function(client, function_name, event or smoke_event())
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        raise SmokeTestFailed(f"smoke test failed: calling function {function_name}: {error}") from None
    elapsed = time.perf_counter() - started
    if answer.status != 200:
        raise SmokeTestFailed(f"smoke test failed: {describe_failure(answer)}")
    return answer, elapsed
