"""SageMaker PyTorch serving handler: model_fn, input_fn, predict_fn, output_fn.

The SageMaker PyTorch inference container (and the local endpoint, local/endpoint_server.py) imports this module
from the model's code/ folder and calls the four functions. Requests:
  application/json   {"url": "https://..."} (the endpoint fetches it, see safe_url_fetch.py)
                     or {"image": "<base64>"}; optional "top_k"
  image/jpeg, image/png, image/webp, application/x-image   the image bytes
top_k (default 5) comes from the JSON body, else from the X-Amzn-SageMaker-Custom-Attributes header ("top_k=3").
The answer is JSON: {"model_version": ..., "predictions": [{"class_name", "index", "probability"}, ...]}; never
logits. Client mistakes raise the typed errors of inference_errors.py, which carry their HTTP status; importing
it also makes the SageMaker toolkit answer them as a short JSON body without a trace (see that module).
"""

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from architectures import build_model
from image_decoding import decode_image
from inference_errors import (BadRequestError, NotAcceptableError, PayloadTooLargeError,
                              UnsupportedMediaTypeError)
from model_layout import CONFIG_FILE, WEIGHTS_FILE
from preprocessing import DEFAULT_IMAGE_SIZE, decode_side, eval_transform
from safe_url_fetch import fetch_image_bytes

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp", "application/x-image")
ACCEPTS_JSON = ("", "*/*", "application/*", JSON_CONTENT_TYPE)
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
DEFAULT_TOP_K = 5
# The one request size limit: what SageMaker Runtime's InvokeEndpoint accepts (botocore's model: Body max 6291456),
# so nothing larger ever reaches the container. The container environment (terraform/modules/endpoint) sets
# TorchServe's TS_MAX_REQUEST_SIZE, and the local endpoints their limit, to this same number.
MAX_REQUEST_BYTES = 6 * 1024 * 1024

# model_fn sets this to the loaded model's resize size so input_fn can decode big JPEGs at reduced scale.
_decode_min_side = decode_side(DEFAULT_IMAGE_SIZE)


@dataclass(frozen=True)
class LoadedModel:
    network: torch.nn.Module
    class_names: tuple
    image_size: int
    model_version: str
    arch: str
    device: torch.device
    transform: object


@dataclass(frozen=True)
class ImageRequest:
    image: object   # PIL.Image in RGB
    top_k: int


def model_fn(model_dir, context=None):
    """Load weights and config that training wrote into `model_dir`; nothing is downloaded."""
    global _decode_min_side
    model_dir = Path(model_dir)
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    missing = [key for key in ("arch", "num_classes", "class_names", "image_size", "model_version")
               if key not in config]
    if missing:
        raise ValueError(f"{model_dir / CONFIG_FILE} lacks {', '.join(missing)}")
    if len(config["class_names"]) != int(config["num_classes"]):
        raise ValueError(f"{CONFIG_FILE}: {len(config['class_names'])} class names for "
                         f"{config['num_classes']} classes")
    device = _device(context)
    network = build_model(config["arch"], int(config["num_classes"]), weights="none")
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    network.to(device).eval()
    image_size = int(config["image_size"])
    with torch.inference_mode():  # first call allocates and picks kernels; pay that at load, not on a request
        network(torch.zeros(1, 3, image_size, image_size, device=device))
    _decode_min_side = decode_side(image_size)
    logger.info("model loaded: %s %s, %d classes, %d px, version %s", config["arch"], device,
                config["num_classes"], image_size, config["model_version"])
    return LoadedModel(network=network, class_names=tuple(config["class_names"]), image_size=image_size,
                       model_version=str(config["model_version"]), arch=config["arch"], device=device,
                       transform=eval_transform(image_size))


def _device(context):
    gpu_id = (getattr(context, "system_properties", None) or {}).get("gpu_id")
    return worker_device(gpu_id, torch.cuda.device_count())


def worker_device(gpu_id, gpu_count):
    """The device a worker serves on: its own GPU, the `gpu_id` TorchServe's context gives it (round robin over the
    instance's GPUs), GPU 0 for a server that names none (the builtin runtime), the CPU where there is no GPU."""
    if gpu_count == 0:
        return torch.device("cpu")
    gpu = 0 if gpu_id is None else int(gpu_id)
    if not 0 <= gpu < gpu_count:
        raise ValueError(f"the worker's gpu_id is {gpu_id} but this machine has {gpu_count} GPUs")
    return torch.device("cuda", gpu)


def _media_type(value):
    return (value or "").split(";", 1)[0].strip().lower()


def _parse_top_k(value, source):
    if isinstance(value, bool) or value is None:
        raise BadRequestError(f"top_k in {source} must be a positive integer")
    try:
        top_k = int(value)
    except (TypeError, ValueError):
        raise BadRequestError(f"top_k in {source} must be a positive integer, got {value!r}") from None
    if isinstance(value, float) and value != top_k or top_k < 1:
        raise BadRequestError(f"top_k in {source} must be a positive integer, got {value!r}")
    return top_k


def _request_header(context, name):
    """A request header, whatever its case: TorchServe hands the handler the headers as the client spelled them.

    `context` is TorchServe's request context (the local builtin endpoint passes one of the same shape)."""
    try:
        headers = context.request_processor[0].get_request_properties()
    except (AttributeError, IndexError, TypeError):
        return None
    wanted = name.lower()
    for key, value in (headers or {}).items():
        if key.lower() == wanted and value:
            return value.decode() if isinstance(value, bytes) else value
    return None


def _top_k_from_custom_attributes(context):
    attributes = _request_header(context, CUSTOM_ATTRIBUTES_HEADER)
    for pair in (attributes or "").replace(",", ";").split(";"):
        key, _, value = pair.partition("=")
        if key.strip() == "top_k":
            return _parse_top_k(value.strip(), CUSTOM_ATTRIBUTES_HEADER)
    return None


def _decode_base64(text):
    if not isinstance(text, str) or not text:
        raise BadRequestError('"image" must be a non-empty base64 string')
    if text.startswith("data:") and "," in text:   # data:image/jpeg;base64,....
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError('"image" is not valid base64') from None


def _parse_json_request(input_data):
    try:
        body = json.loads(input_data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequestError(f"body is not valid JSON ({error.__class__.__name__})") from None
    if not isinstance(body, dict) or ("url" in body) == ("image" in body):
        raise BadRequestError('expected a JSON object with either "url" or "image" (base64)')
    if "url" in body:
        if not isinstance(body["url"], str) or not body["url"].strip():
            raise BadRequestError('"url" must be a non-empty string')
        image_bytes = fetch_image_bytes(body["url"])
    else:
        image_bytes = _decode_base64(body["image"])
    top_k = _parse_top_k(body["top_k"], "the body") if "top_k" in body else None
    return image_bytes, top_k


def input_fn(input_data, content_type, context=None):
    """Turn a request body into an ImageRequest (decoded RGB image + top_k)."""
    media_type = _media_type(content_type)
    if isinstance(input_data, str):
        input_data = input_data.encode()
    if input_data is None or len(input_data) == 0:
        raise BadRequestError("the request body is empty")
    if len(input_data) > MAX_REQUEST_BYTES:
        raise PayloadTooLargeError(f"request body is {len(input_data)} bytes, the limit is {MAX_REQUEST_BYTES}")
    if media_type == JSON_CONTENT_TYPE:
        image_bytes, top_k = _parse_json_request(bytes(input_data))
    elif media_type in IMAGE_CONTENT_TYPES:
        image_bytes, top_k = bytes(input_data), None
    else:
        shown = media_type or "none"
        raise UnsupportedMediaTypeError(f"content type {shown} is not supported; send {JSON_CONTENT_TYPE} or "
                                        f"one of {', '.join(IMAGE_CONTENT_TYPES)}")
    if top_k is None:
        top_k = _top_k_from_custom_attributes(context) or DEFAULT_TOP_K
    return ImageRequest(image=decode_image(image_bytes, _decode_min_side), top_k=top_k)


def predict_fn(data, model, context=None):
    """Top-k classes of one image: name, index, probability, plus the model version."""
    batch = model.transform(data.image).unsqueeze(0).to(model.device)
    with torch.inference_mode():
        probabilities = torch.softmax(model.network(batch).float(), dim=1)[0]
    top = torch.topk(probabilities, k=min(data.top_k, len(model.class_names)))
    return {
        "model_version": model.model_version,
        "predictions": [
            {"class_name": model.class_names[index], "index": index, "probability": round(probability, 6)}
            for probability, index in zip(top.values.tolist(), top.indices.tolist())
        ],
    }


def output_fn(prediction, accept, context=None):
    """JSON for a missing, */* or JSON Accept; returns (body, content type) as the toolkit expects."""
    ranges = [_media_type(part) for part in (accept or "").split(",")]
    if not any(media_range in ACCEPTS_JSON for media_range in ranges):
        raise NotAcceptableError(f"cannot answer in {accept}; accept {JSON_CONTENT_TYPE}")
    return json.dumps(prediction), JSON_CONTENT_TYPE
