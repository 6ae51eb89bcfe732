"""Lambda execution environments for the local function: `awslambdaric` processes and the Runtime API they poll.

Each environment is `python -m awslambdaric <handler>` started in the unpacked function zip (as /var/task is on
Lambda), with the environment variables Lambda sets, and its own Runtime API listener on 127.0.0.1 (as each Lambda
sandbox has its own): the runtime client imports the handler, then loops on
  GET  /2018-06-01/runtime/invocation/next            the next event (blocks until there is one)
  POST /2018-06-01/runtime/invocation/{id}/response   the handler's result
  POST /2018-06-01/runtime/invocation/{id}/error      the handler's unhandled exception
  POST /2018-06-01/runtime/init/error                 the handler could not be imported (then it exits)
One environment runs one event at a time. The pool starts environments on demand (a cold start), keeps them warm
for the next event, refuses an event past the reserved concurrency at once, and stops an environment whose event
runs past the function's timeout (the next event gets a fresh one). The log gets Lambda's START, END and REPORT
lines (Init Duration on a cold start) beside the runtime client's own lines.
"""

import base64
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

RUNTIME_API = "/2018-06-01/runtime"
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024      # synchronous invocation payload limit, each way
INIT_TIMEOUT_S = 10                      # Lambda's limit on an on-demand environment's init phase
ACCOUNT = "000000000000"
# AWS_EXECUTION_ENV names the Lambda runtime of the interpreter that runs the environments (the venv's, not
# Terraform's python3.12): awslambdaric switches on it (from python3.12 on it polls from a new thread per event).
EXECUTION_ENV = f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}"
EXIT_GRACE_S = 5                         # for an environment that closed its connection to be seen exiting


@dataclass(frozen=True)
class FunctionConfig:
    """What Lambda knows about the function: the settings Terraform gives it, and where its code is unpacked."""
    name: str
    task_root: Path
    handler: str = "lambda_function.lambda_handler"
    timeout_s: float = 140
    memory_mb: int = 256
    region: str = "us-east-1"
    environment: dict = field(default_factory=dict)   # the function's own variables (Terraform's environment block)
    version: str = "$LATEST"

    @property
    def arn(self):
        return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{self.name}"

    @property
    def log_group(self):
        return f"/aws/lambda/{self.name}"


class Throttled(Exception):
    """Every environment the reserved concurrency allows is busy."""


@dataclass
class Answer:
    """What the Invoke API returns: the body, and X-Amz-Function-Error when the function failed."""
    request_id: str
    body: bytes
    function_error: str | None = None


def error_body(error_type, message, request_id=""):
    return json.dumps({"errorMessage": message, "errorType": error_type, "requestId": request_id,
                       "stackTrace": []}).encode()


class Invocation:
    """One event on its way through an environment; the first of result, error or timeout to arrive wins."""

    def __init__(self, payload, client_context, timeout_s):
        self.request_id = str(uuid.uuid4())
        self.payload = payload
        self.client_context = client_context
        self.timeout_s = timeout_s
        self.deadline_ms = None
        self.trace_id = (f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};"
                         "Sampled=0")
        self.answer = None
        self.outcome = None        # "success", "error", "timeout"
        self._done = threading.Event()
        self._lock = threading.Lock()

    def finish(self, body, function_error=None, outcome="success"):
        with self._lock:
            if self.answer is not None:
                return False
            self.answer = Answer(self.request_id, body, function_error)
            self.outcome = outcome
        self._done.set()
        return True

    def wait(self, timeout_s):
        return self._done.wait(timeout_s)


def _lambda_log(line):
    """A platform line (START, END, REPORT, ...) in the function's log, as Lambda writes them to CloudWatch."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _PeakMemory:
    """An environment's peak resident set (VmHWM), as Max Memory Used: /proc/<pid>/status is kept open and read
    again from its start, which costs a tenth of opening it for every REPORT line."""

    def __init__(self, pid):
        try:
            self._fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
        except OSError:
            self._fd = None

    def megabytes(self):
        if self._fd is None:
            return 0
        try:
            status = os.pread(self._fd, 4096, 0)
            start = status.index(b"VmHWM:")
            return math.ceil(int(status[start + 6:status.index(b"kB", start)]) / 1024)
        except (OSError, ValueError):
            return 0

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _RuntimeConnection:
    """One connection of a runtime client to its environment's Runtime API (`env` is the Environment).

    HTTP/1.1 kept alive, requests with a Content-Length (what the runtime client sends), each answer in one write:
    http.server's parser costs several times more per request, twice per event.
    """

    def __init__(self, connection, env):
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection = connection
        self.env = env
        self.rfile = connection.makefile("rb")
        self.close_connection = False
        self.resume = None

    def serve(self):
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self):
        """Read one request and answer it; a closed, timed-out or malformed connection ends with close_connection."""
        try:
            request = self._read_request()
        except (OSError, ValueError):
            request = None
        if request is None:
            self.close_connection = True
            return
        method, path, headers, body = request
        if method == "GET" and path == f"{RUNTIME_API}/invocation/next":
            if not self.env.park(self):    # the environment is being stopped
                self.close_connection = True
            return
        if method == "POST":
            self._post(path, headers, body)
            return
        self._reply(404, {"errorMessage": f"no route {method} {path}", "errorType": "NotFound"})

    def _read_request(self):
        line = self.rfile.readline(65537)
        if not line:
            return None
        method, path, _version = line.decode("latin-1").split(" ", 2)
        headers = {}
        while True:
            header_line = self.rfile.readline(65537)
            if header_line in (b"\r\n", b"\n", b""):
                break
            name, _, value = header_line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("connection", "").lower() == "close":
            self.close_connection = True
        if headers.get("expect", "").lower() == "100-continue":
            self.connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline(1024).split(b";")[0], 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass
            return method, path, headers, b"".join(chunks)
        length = int(headers.get("content-length") or 0)
        return method, path, headers, self.rfile.read(length) if length else b""

    def _reply(self, status, body, extra_headers=()):
        self._send(status, json.dumps(body).encode(), extra_headers)

    def _send(self, status, data, extra_headers=()):
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
                f"Content-Length: {len(data)}", *(f"{name}: {value}" for name, value in extra_headers), "", ""]
        self.connection.sendall("\r\n".join(head).encode("latin-1") + data)

    def send_event(self, invocation):
        """The answer to the parked GET /next (written by the invoking thread)."""
        headers = [("Lambda-Runtime-Aws-Request-Id", invocation.request_id),
                   ("Lambda-Runtime-Deadline-Ms", invocation.deadline_ms),
                   ("Lambda-Runtime-Invoked-Function-Arn", self.env.config.arn),
                   ("Lambda-Runtime-Trace-Id", invocation.trace_id)]
        if invocation.client_context:
            headers.append(("Lambda-Runtime-Client-Context", invocation.client_context))
        self._send(200, invocation.payload, headers)

    def _post(self, path, headers, body):
        parts = path[len(RUNTIME_API) + 1:].split("/") if path.startswith(RUNTIME_API + "/") else []
        if parts == ["init", "error"]:
            self.env.init_failed(body, headers.get("lambda-runtime-function-error-type"))
            return self._reply(202, {"status": "OK"})
        if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            invocation = self.env.current
            if invocation is None or invocation.request_id != parts[1]:
                return self._reply(400, {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"})
            if parts[2] == "error":
                invocation.finish(body, "Unhandled", outcome="error")
                return self._reply(202, {"status": "OK"})
            if len(body) > MAX_PAYLOAD_BYTES:   # the runtime client fails on the 413 and exits: Lambda resets it
                self.env.discard = True
                invocation.finish(error_body("Function.ResponseSizeTooLarge",
                                             f"Response payload size exceeded maximum allowed payload size "
                                             f"({MAX_PAYLOAD_BYTES} bytes).", invocation.request_id),
                                  "Unhandled", outcome="error")
                return self._reply(413, {"errorMessage": f"Exceeded maximum allowed payload size "
                                                         f"({MAX_PAYLOAD_BYTES} bytes).",
                                         "errorType": "RequestEntityTooLarge"})
            invocation.finish(body)
            return self._reply(202, {"status": "OK"})
        return self._reply(404, {"errorMessage": f"no route POST {path}", "errorType": "NotFound"})


class Environment:
    """One awslambdaric process, its Runtime API listener, and the event it runs (at most one)."""

    def __init__(self, config, number, python=sys.executable):
        self.config = config
        self.number = number
        self.state = "initializing"      # -> idle <-> busy; -> stopped
        self.invocations = 0
        self.current = None
        self.init_duration_ms = None
        self.init_error = None           # (body, error type) the runtime client posted to /init/error
        self.discard = False             # stop it once its event is answered
        self._parked = None              # the runtime client's connection, waiting in GET /next for an event
        self._parked_changed = threading.Condition()
        self._ready = threading.Event()  # set at the first GET /next (init done), an init error or an exit
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.runtime_api = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name=f"runtime-api-{number}", daemon=True).start()
        self._started = time.monotonic()
        self.process = subprocess.Popen([python, "-m", "awslambdaric", config.handler], cwd=config.task_root,
                                        env=self._variables(), stdin=subprocess.DEVNULL)
        self.pid = self.process.pid
        self.peak_memory = _PeakMemory(self.pid)
        threading.Thread(target=self._watch, name=f"environment-{number}", daemon=True).start()

    def _variables(self):
        """What Lambda puts in a Python function's environment, then the function's own variables."""
        config = self.config
        stream = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[{config.version}]{uuid.uuid4().hex}"
        variables = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "en_US.UTF-8", "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(config.task_root), "_HANDLER": config.handler,
            "AWS_EXECUTION_ENV": EXECUTION_ENV, "AWS_LAMBDA_RUNTIME_API": self.runtime_api,
            "AWS_LAMBDA_FUNCTION_NAME": config.name, "AWS_LAMBDA_FUNCTION_VERSION": config.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb), "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": config.log_group, "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_REGION": config.region, "AWS_DEFAULT_REGION": config.region,
            "PYTHONDONTWRITEBYTECODE": "1",   # /var/task is read-only on Lambda
        }
        return {**variables, **config.environment}

    # ---- the Runtime API side (called from the listener's threads)

    def _accept(self):
        while True:
            try:
                connection, address = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection, address), daemon=True).start()

    def _serve(self, connection, address):
        try:
            _RuntimeConnection(connection, self).serve()
        except OSError:
            pass
        finally:
            connection.close()

    def park(self, handler):
        """GET /next arrived: the connection waits here while an invoking thread uses it; False when stopped."""
        if not self._ready.is_set():
            self.init_duration_ms = (time.monotonic() - self._started) * 1000
            self._ready.set()
        handler.resume = threading.Event()
        with self._parked_changed:
            if self.state == "stopped":
                return False
            self._parked = handler
            self._parked_changed.notify_all()
        handler.resume.wait()
        return self.state != "stopped"

    def init_failed(self, body, error_type):
        self.init_duration_ms = (time.monotonic() - self._started) * 1000
        self.init_error = (body, error_type or "Runtime.Unknown")
        self._ready.set()

    def _watch(self):
        code = self.process.wait()
        if self.state == "stopped":
            return
        self.state = "stopped"
        self._ready.set()
        invocation = self.current
        if invocation is not None:
            invocation.finish(error_body("Runtime.ExitError", f"RequestId: {invocation.request_id} Error: Runtime "
                                         f"exited with error: exit status {code}", invocation.request_id),
                              "Unhandled", outcome="error")
        self._close()

    # ---- the pool's side

    def wait_ready(self, timeout_s):
        return self._ready.wait(timeout_s)

    @property
    def alive(self):
        return self.state != "stopped" and self.process.poll() is None

    def run(self, invocation):
        """Give the event to the runtime client and read its result, on the calling thread (no hand-over to
        another thread on the way); False when the function's timeout passed first."""
        deadline = time.monotonic() + invocation.timeout_s
        invocation.deadline_ms = int((time.time() + invocation.timeout_s) * 1000)
        self.current = invocation
        self.invocations += 1
        handler = self._take_parked(deadline)
        if handler is not None:
            try:
                handler.send_event(invocation)
                while invocation.answer is None and not handler.close_connection:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    handler.connection.settimeout(remaining)
                    handler.handle_one_request()   # the runtime's next call: its result or error (do_POST)
            except OSError:
                pass
            finally:
                try:
                    handler.connection.settimeout(None)
                except OSError:
                    pass
                handler.resume.set()
        if invocation.answer is None and self.state != "stopped" and self.process.poll() is None \
                and time.monotonic() >= deadline:
            return False
        # The connection closed or the runtime exited: its watcher answers Runtime.ExitError.
        invocation.wait(max(0.0, min(deadline - time.monotonic(), EXIT_GRACE_S)))
        if invocation.answer is None and self.state == "stopped":
            invocation.finish(error_body("Runtime.ExitError", f"RequestId: {invocation.request_id} Error: Runtime "
                                         "exited without providing a reason", invocation.request_id),
                              "Unhandled", outcome="error")
        return invocation.answer is not None

    def _take_parked(self, deadline):
        with self._parked_changed:
            while self._parked is None and self.state != "stopped":
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._parked_changed.wait(remaining)
            handler, self._parked = self._parked, None
            return handler

    def stop(self):
        """SIGKILL, as Lambda ends a runtime that has no extensions; the listener closes with it."""
        self.state = "stopped"
        try:
            self.process.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self._close()

    def _close(self):
        with self._parked_changed:
            parked, self._parked = self._parked, None
            self._parked_changed.notify_all()
        if parked is not None:
            parked.resume.set()
        self.peak_memory.close()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()

    def describe(self):
        return {"number": self.number, "pid": self.pid, "state": self.state, "invocations": self.invocations,
                "init_duration_ms": None if self.init_duration_ms is None else round(self.init_duration_ms, 1),
                "runtime_api": self.runtime_api}


class EnvironmentPool:
    """Up to `reserved_concurrency` environments; an event goes to a warm idle one, else to a new one."""

    def __init__(self, config, reserved_concurrency, python=sys.executable):
        self.config = config
        self.reserved_concurrency = reserved_concurrency
        self.python = python
        self.in_flight = 0
        self.cold_starts = 0
        self._idle = []                  # most recently used last: reused first, as Lambda tends to
        self._environments = []
        self._numbers = iter(range(1, sys.maxsize))
        self._lock = threading.Lock()
        self._stopped = False

    def acquire(self):
        """Count one event in flight and pick its environment (None: start one); raises Throttled at once."""
        with self._lock:
            if self._stopped or self.in_flight >= self.reserved_concurrency:
                raise Throttled()
            self.in_flight += 1
            while self._idle:
                environment = self._idle.pop()
                if environment.alive:
                    environment.state = "busy"
                    return environment
                self._environments.remove(environment)
            return None

    def invoke(self, environment, payload, client_context=None):
        """Run one event (after acquire) and release its place; returns the Answer."""
        invocation = Invocation(payload, client_context, self.config.timeout_s)
        try:
            if environment is None:
                environment = self._cold_start(invocation)
                if environment is None:
                    return invocation.answer
            self._run(environment, invocation)
            return invocation.answer
        finally:
            with self._lock:
                self.in_flight -= 1
                if environment is not None and environment.alive and environment.state == "busy":
                    environment.current = None
                    environment.state = "idle"
                    self._idle.append(environment)
                if environment is not None and not environment.alive and environment in self._environments:
                    self._environments.remove(environment)

    def _cold_start(self, invocation):
        with self._lock:
            environment = Environment(self.config, next(self._numbers), self.python)
            self._environments.append(environment)
            self.cold_starts += 1
        if not environment.wait_ready(INIT_TIMEOUT_S):
            # Lambda then runs the init again within the invoke, under the function's timeout; this lets the same
            # init go on for that long.
            _lambda_log(f"INIT_REPORT Init Duration: {INIT_TIMEOUT_S * 1000:.2f} ms\tPhase: init\tStatus: timeout")
            if not environment.wait_ready(invocation.timeout_s):
                environment.stop()
                invocation.finish(error_body("Sandbox.Timedout", f"RequestId: {invocation.request_id} Error: Task "
                                             f"timed out after {invocation.timeout_s:.2f} seconds",
                                             invocation.request_id), "Unhandled", outcome="timeout")
                self._forget(environment)
                return None
        if environment.init_error is not None or not environment.alive:
            body, error_type = environment.init_error or (None, "Runtime.ExitError")
            environment.stop()
            duration = environment.init_duration_ms or (time.monotonic() - environment._started) * 1000
            _lambda_log(f"INIT_REPORT Init Duration: {duration:.2f} ms\tPhase: init\tStatus: error\t"
                        f"Error Type: {error_type}")
            invocation.finish(body or error_body(error_type, f"RequestId: {invocation.request_id} Error: Runtime "
                                                 "exited without providing a reason", invocation.request_id),
                              "Unhandled", outcome="error")
            self._forget(environment)
            return None
        environment.state = "busy"
        return environment

    def _forget(self, environment):
        with self._lock:
            if environment in self._environments:
                self._environments.remove(environment)

    def _run(self, environment, invocation):
        cold = environment.invocations == 0
        _lambda_log(f"START RequestId: {invocation.request_id} Version: {self.config.version}")
        started = time.monotonic()
        if not environment.run(invocation):
            message = f"Task timed out after {invocation.timeout_s:.2f} seconds"
            if invocation.finish(error_body("Sandbox.Timedout", f"RequestId: {invocation.request_id} Error: "
                                            f"{message}", invocation.request_id),
                                 "Unhandled", outcome="timeout"):
                _lambda_log(f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}.000Z {invocation.request_id} "
                            f"{message}")
                environment.stop()
        if environment.discard:
            environment.stop()
        duration_ms = (time.monotonic() - started) * 1000
        memory = environment.peak_memory.megabytes()
        report = (f"END RequestId: {invocation.request_id}\n"
                  f"REPORT RequestId: {invocation.request_id}\tDuration: {duration_ms:.2f} ms\t"
                  f"Billed Duration: {math.ceil(duration_ms)} ms\tMemory Size: {self.config.memory_mb} MB\t"
                  f"Max Memory Used: {memory} MB")
        if cold:
            report += f"\tInit Duration: {environment.init_duration_ms:.2f} ms"
        if invocation.outcome != "success":
            report += f"\tStatus: {invocation.outcome}"
        _lambda_log(report)

    def status(self):
        with self._lock:
            self._environments = [environment for environment in self._environments if environment.alive]
            self._idle = [environment for environment in self._idle if environment.alive]
            environments = [environment.describe() for environment in self._environments]
        states = [environment["state"] for environment in environments]
        return {"in_flight": self.in_flight, "reserved_concurrency": self.reserved_concurrency,
                "environments": environments, "warm": states.count("idle"), "busy": states.count("busy"),
                "initializing": states.count("initializing"), "cold_starts": self.cold_starts}

    def stop(self):
        """Stop every environment (the server is going away); later events are throttled."""
        with self._lock:
            self._stopped = True
            environments, self._environments, self._idle = list(self._environments), [], []
        for environment in environments:
            environment.stop()


def decode_client_context(header):
    """X-Amz-Client-Context is base64 of a JSON object; the runtime gets the JSON text."""
    if not header:
        return None
    try:
        text = base64.b64decode(header, validate=True).decode("utf-8")
        if not isinstance(json.loads(text), dict):
            raise ValueError("not an object")
    except ValueError:
        return False
    return text
