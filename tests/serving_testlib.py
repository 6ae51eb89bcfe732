"""Helpers of the serving tests: a tiny real model directory, generated images, and a loopback image server.

The image server is the tests' stand-in for the internet (the only fake the serving tests use besides AWS
service errors): it serves images on 127.0.0.1, redirects, answers slowly or never, on the routes a test sets.
"""

import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

CLASS_NAMES = ("Beagle", "Pug", "Poodle")
IMAGE_SIZE = 64


def make_model_dir(path, class_names=CLASS_NAMES, image_size=IMAGE_SIZE, arch="resnet18"):
    """A model directory written by training's own writer, with an untrained ResNet-18 (serving needs no accuracy)."""
    from architectures import build_model
    from model_archive import write_model_dir

    import torch

    torch.manual_seed(0)
    model = build_model(arch, len(class_names), weights="none")
    return write_model_dir(path, model, arch=arch, class_names=list(class_names), image_size=image_size,
                           weights="none", mode="finetune")


def image_bytes(size=(160, 120), mode="RGB", fmt="JPEG", color=None, **save_args):
    color = color if color is not None else {"RGB": (180, 90, 40), "L": 120, "CMYK": (0, 80, 160, 20),
                                             "RGBA": (10, 200, 30, 128), "P": 3, "I;16": 40000}.get(mode, 0)
    image = Image.new(mode, size, color)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ImageServer:
    """ThreadingHTTPServer on 127.0.0.1. routes: path -> (status, headers, body) or a callable(handler).

    `gate` blocks the /gated/* routes until set; /hang/* never answers until the server stops.
    """

    def __init__(self):
        self.routes = {}
        self.requests = []          # (path, Host header) of every request seen
        self.gate = threading.Event()
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                """A plain route's status and headers without its body (curl --head asks the size so)."""
                server.requests.append((self.path, self.headers.get("Host")))
                route = server.routes.get(self.path)
                self.send_status_and_headers(*(route if isinstance(route, tuple) else (404, {}, b"")))

            def send_status_and_headers(self, status, headers, body):
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Host")))
                if self.path.startswith("/hang/"):
                    server.stopping.wait()
                    return
                if self.path.startswith("/gated/"):
                    server.gate.wait(timeout=60)
                    route = server.routes.get(self.path[len("/gated"):])
                else:
                    route = server.routes.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if callable(route):
                    route(self)
                    return
                status, headers, body = route
                self.send_status_and_headers(status, headers, body)
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def url(self, path, host="127.0.0.1"):
        return f"http://{host}:{self.port}{path}"

    def image(self, path, data, content_type="image/jpeg"):
        self.routes[path] = (200, {"Content-Type": content_type}, data)

    def redirect(self, path, location, status=302):
        self.routes[path] = (status, {"Location": location}, b"")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.gate.set()
        self._httpd.shutdown()
        self._httpd.server_close()
