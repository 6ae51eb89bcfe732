"""inference.py's four functions, in-process, on a real (untrained) ResNet-18 model directory."""

import base64
import io
import json
import socket
import struct
import zlib

import pytest
from PIL import Image

import inference
from inference_errors import InferenceError
from local.endpoint_server import RequestContext   # TorchServe's request context, as the builtin runtime builds it
from preprocessing import resize_size
from bench.loopback_servers import ImageServer
from serving_testlib import CLASS_NAMES, IMAGE_SIZE, image_bytes, make_model_dir


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """As in an endpoint worker; also keeps these tests quick when other work has the cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    make_model_dir(path)
    return path


@pytest.fixture(scope="module")
def model(model_dir):
    return inference.model_fn(str(model_dir))


def predict(model, body, content_type="image/jpeg", accept="application/json", context=None):
    data = inference.input_fn(body, content_type, context)
    answer, content_type = inference.output_fn(inference.predict_fn(data, model), accept)
    assert content_type == "application/json"
    return json.loads(answer)


def status_of(call):
    with pytest.raises(InferenceError) as raised:
        call()
    error = raised.value
    body = json.loads(error.message)   # what the client receives: short JSON, no trace
    assert set(body) == {"error", "message"} and "Traceback" not in body["message"]
    return error.status_code


def test_model_fn_loads_what_training_wrote_without_the_network(model_dir, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    loaded = inference.model_fn(str(model_dir))
    config = json.loads((model_dir / "model_config.json").read_text())
    assert loaded.class_names == CLASS_NAMES
    assert loaded.model_version == config["model_version"]
    assert loaded.image_size == IMAGE_SIZE
    assert not loaded.network.training


def test_model_fn_refuses_a_config_that_does_not_match(tmp_path):
    make_model_dir(tmp_path)
    config = json.loads((tmp_path / "model_config.json").read_text())
    config["class_names"] = config["class_names"][:2]
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="class names"):
        inference.model_fn(str(tmp_path))


def test_answer_is_top_k_breeds_with_probabilities_and_model_version_never_logits(model):
    answer = predict(model, image_bytes())
    assert set(answer) == {"model_version", "predictions"}
    assert answer["model_version"] == model.model_version
    predictions = answer["predictions"]
    assert len(predictions) == len(CLASS_NAMES)            # default 5, capped at the number of classes
    assert {p["class_name"] for p in predictions} == set(CLASS_NAMES)
    assert all(CLASS_NAMES[p["index"]] == p["class_name"] for p in predictions)
    probabilities = [p["probability"] for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 <= p <= 1 for p in probabilities) and sum(probabilities) == pytest.approx(1, abs=1e-4)


def test_top_k_from_the_json_body_or_the_custom_attributes_header(model):
    image = base64.b64encode(image_bytes()).decode()
    from_body = predict(model, json.dumps({"image": image, "top_k": 2}), "application/json")
    assert len(from_body["predictions"]) == 2
    header = RequestContext({"X-Amzn-SageMaker-Custom-Attributes": "trace=1;top_k=1"})
    from_header = predict(model, image_bytes(), "application/x-image", context=header)
    assert len(from_header["predictions"]) == 1


@pytest.mark.parametrize("name", ["X-Amzn-SageMaker-Custom-Attributes", "x-amzn-sagemaker-custom-attributes",
                                  "X-AMZN-SAGEMAKER-CUSTOM-ATTRIBUTES"])
def test_the_custom_attributes_header_is_found_whatever_its_case(model, name):
    answer = predict(model, image_bytes(), "image/jpeg", context=RequestContext({name: "top_k=2"}))
    assert len(answer["predictions"]) == 2


def test_a_worker_runs_on_its_own_gpu_else_on_the_cpu(model_dir):
    import torch

    last_gpu = max(torch.cuda.device_count() - 1, 0)   # on a multi-GPU machine: not the default cuda:0
    loaded = inference.model_fn(str(model_dir), RequestContext(gpu_id=last_gpu))
    assert loaded.device == (torch.device("cuda", last_gpu) if torch.cuda.is_available() else torch.device("cpu"))
    assert next(loaded.network.parameters()).device == loaded.device


@pytest.mark.parametrize("gpu_id, gpu_count, expected", [
    (None, 0, "cpu"), (3, 0, "cpu"),                        # no GPU: the CPU, whatever the context says
    (0, 4, "cuda:0"), (1, 4, "cuda:1"), (3, 4, "cuda:3"),   # each worker its own GPU, not all on cuda:0
    (None, 2, "cuda:0"),                                    # a server that names none (the builtin runtime)
])
def test_a_workers_gpu_id_chooses_its_device(gpu_id, gpu_count, expected):
    import torch

    assert inference.worker_device(gpu_id, gpu_count) == torch.device(expected)


def test_a_gpu_id_the_machine_does_not_have_is_refused_in_one_line():
    with pytest.raises(ValueError, match="gpu_id is 2 but this machine has 2 GPUs"):
        inference.worker_device(2, 2)


def test_the_gpu_id_is_read_from_torchserves_own_context(monkeypatch):
    """TorchServe's ts.context.Context, as a toolkit worker gets it (gpu=1 of 2 GPUs), reaches the device choice."""
    import torch
    from ts.context import Context

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)   # the machine (not our code) says: two GPUs
    context = Context("model", "/opt/ml/model", {}, batch_size=1, gpu=1, mms_version="0.12.0")
    assert inference._device(context) == torch.device("cuda", 1)


@pytest.mark.parametrize("content_type, fmt", [
    ("image/jpeg", "JPEG"), ("image/png", "PNG"), ("image/webp", "WEBP"), ("application/x-image", "JPEG"),
    ("application/x-image", "GIF"), ("image/jpeg; charset=binary", "JPEG"),
])
def test_raw_image_content_types(model, content_type, fmt):
    assert predict(model, image_bytes(fmt=fmt), content_type)["predictions"]


@pytest.mark.parametrize("mode, fmt", [("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"),
                                       ("I;16", "PNG"), ("L", "JPEG")])
def test_grey_palette_alpha_cmyk_and_16_bit_images_become_rgb(model, mode, fmt):
    request = inference.input_fn(image_bytes(mode=mode, fmt=fmt), "image/png" if fmt == "PNG" else "image/jpeg")
    assert request.image.mode == "RGB"
    assert predict(model, image_bytes(mode=mode, fmt=fmt), "application/x-image")["predictions"]


def test_exif_orientation_is_applied(model):
    image = Image.new("RGB", (200, 100), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6   # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    assert inference.input_fn(buffer.getvalue(), "image/jpeg").image.size == (100, 200)


def test_big_jpeg_is_decoded_at_reduced_scale_but_not_below_the_resize_size(model):
    big = image_bytes(size=(4000, 3000), quality=80)
    decoded = inference.input_fn(big, "image/jpeg").image
    assert decoded.size[0] < 4000
    assert min(decoded.size) >= resize_size(model.image_size)
    assert predict(model, big)["predictions"]


def test_json_url_is_fetched_when_its_address_is_allowed(model, monkeypatch):
    monkeypatch.setenv("IMAGE_FETCH_ALLOW_NETWORKS", "127.0.0.1/32")
    with ImageServer() as server:
        server.image("/dog.jpg", image_bytes())
        answer = predict(model, json.dumps({"url": server.url("/dog.jpg"), "top_k": 1}), "application/json")
    assert len(answer["predictions"]) == 1


def test_json_url_to_loopback_is_refused_by_default(model, monkeypatch):
    monkeypatch.delenv("IMAGE_FETCH_ALLOW_NETWORKS", raising=False)
    with ImageServer() as server:
        server.image("/dog.jpg", image_bytes())
        body = json.dumps({"url": server.url("/dog.jpg")})
        assert status_of(lambda: inference.input_fn(body, "application/json")) == 422
        assert server.requests == []


def _png_header_only(width, height):
    """A PNG that declares width x height pixels (a decompression bomb's header) with almost no data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("body, content_type, status", [
    (b"{not json", "application/json", 400),
    (b'{"top_k": 3}', "application/json", 400),
    (b'{"url": "https://a.example/x.jpg", "image": "AAAA"}', "application/json", 400),
    (b'["https://a.example/x.jpg"]', "application/json", 400),
    (b'{"image": "not base64!"}', "application/json", 400),
    (b'{"url": ""}', "application/json", 400),
    (b"", "image/jpeg", 400),
    (b"hello", "text/plain", 415),
    (b"hello", None, 415),
    (b"this is not an image", "image/jpeg", 422),
    (b'{"url": "file:///etc/passwd"}', "application/json", 422),
    (b'{"url": "http://169.254.169.254/latest/meta-data/"}', "application/json", 422),
])
def test_bad_requests_get_their_status_and_a_short_json_message(body, content_type, status):
    assert status_of(lambda: inference.input_fn(body, content_type)) == status


@pytest.mark.parametrize("top_k", [0, -1, "three", 1.5, True])
def test_bad_top_k_is_a_400(top_k):
    body = json.dumps({"image": base64.b64encode(image_bytes()).decode(), "top_k": top_k})
    assert status_of(lambda: inference.input_fn(body, "application/json")) == 400


def test_too_many_bytes_is_a_413():
    huge = b"\xff\xd8" + b"\0" * (inference.MAX_REQUEST_BYTES + 1)
    assert status_of(lambda: inference.input_fn(huge, "image/jpeg")) == 413


def test_decompression_bomb_is_a_413_not_a_crash():
    assert status_of(lambda: inference.input_fn(_png_header_only(20000, 20000), "image/png")) == 413


def test_truncated_image_is_a_422():
    whole = image_bytes(size=(400, 300), quality=95)
    assert status_of(lambda: inference.input_fn(whole[: len(whole) // 2], "image/jpeg")) == 422


def test_extreme_aspect_ratio_is_a_422():
    assert status_of(lambda: inference.input_fn(image_bytes(size=(4000, 20), fmt="PNG"), "image/png")) == 422


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/json", "text/html, application/json;q=0.9"])
def test_output_is_json_for_json_or_any_accept(model, accept):
    assert predict(model, image_bytes(), accept=accept)["predictions"]


def test_unsupported_accept_is_a_406(model):
    prediction = inference.predict_fn(inference.input_fn(image_bytes(), "image/jpeg"), model)
    assert status_of(lambda: inference.output_fn(prediction, "application/xml")) == 406
