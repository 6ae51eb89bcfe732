"""Loopback servers that the benchmarks and the tests both run: an image server (the stand-in for the internet: images,
redirects, slow and silent answers on 127.0.0.1) and the local function server started from a zip.

They live here, not in tests/, because a benchmark may not import the tests; the tests import them from here.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
from botocore.config import Config

from local.ports import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTION_NAME = "dog-breeds-test"


class LoopbackHTTPServer:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port) served by a daemon thread while the `with` block runs."""

    def _listen(self, handler):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()


class ImageServer(LoopbackHTTPServer):
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

        self._listen(Handler)

    def url(self, path, host="127.0.0.1"):
        return f"http://{host}:{self.port}{path}"

    def image(self, path, data, content_type="image/jpeg"):
        self.routes[path] = (200, {"Content-Type": content_type}, data)

    def redirect(self, path, location, status=302):
        self.routes[path] = (status, {"Location": location}, b"")

    def __exit__(self, *exc):
        self.stopping.set()
        self.gate.set()
        super().__exit__(*exc)


class FunctionServer:
    """`python -m local.function_server` on a free port, its log in `log_path`; stopped by stop()."""

    def __init__(self, root, zip_path, handler="lambda_function.lambda_handler", timeout_s=None,
                 reserved_concurrency=None, environment=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.root / "function.log"
        self.function_dir = self.root / "function"
        command = [sys.executable, "-m", "local.function_server", "--zip", str(zip_path),
                   "--function-dir", str(self.function_dir), "--function-name", FUNCTION_NAME,
                   "--handler", handler, "--port", str(self.port)]
        if timeout_s is not None:
            command += ["--timeout", str(timeout_s)]
        if reserved_concurrency is not None:
            command += ["--reserved-concurrency", str(reserved_concurrency)]
        for name, value in (environment or {}).items():
            command += ["--env", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            env=dict(os.environ))
        deadline = time.monotonic() + 60
        while True:
            try:
                self.status()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"the function server did not start:\n{self.log()}")
                time.sleep(0.05)

    def status(self):
        with urllib.request.urlopen(self.url + "/local/status", timeout=5) as response:
            return json.loads(response.read())

    def log(self):
        return self.log_path.read_text(errors="replace")

    def client(self):
        """A boto3 lambda client with one attempt, so a test sees every error."""
        return boto3.client("lambda", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="test",
                            aws_secret_access_key="test",
                            config=Config(connect_timeout=2, read_timeout=60, max_pool_connections=32,
                                          retries={"total_max_attempts": 1}))

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
