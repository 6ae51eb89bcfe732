"""The gunicorn workers of the local stack (local/gunicorn_app.py), on a real gunicorn with a tiny WSGI app.

The endpoint's worker keeps connections alive but must still behave like the sync worker it replaced: one request
at a time, replaced when a request hangs past the timeout, finishing its request on SIGTERM; and neither server
may keep `invoke destroy` waiting because a client holds an idle keep-alive connection.
"""

import http.client
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from local.ports import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent

# /slow?s=N answers after N seconds; anything else at once, with the worker's pid.
SERVER = textwrap.dedent("""
    import os, sys, time
    from urllib.parse import parse_qs
    from local.gunicorn_app import KeepAliveThreadWorker, OneRequestThreadWorker, run_gunicorn

    def app(environ, start_response):
        seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["0"])[0])
        time.sleep(seconds)
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    worker, threads, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    run_gunicorn(lambda: app, {
        "bind": "127.0.0.1:" + port, "workers": 1, "threads": threads, "keepalive": 60, "timeout": 2,
        "graceful_timeout": 30, "errorlog": "-",
        "worker_class": {"one": OneRequestThreadWorker, "keepalive": KeepAliveThreadWorker}[worker]})
""")


def start_server(worker, threads):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, worker, str(threads), str(port)], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    process.port = port
    deadline = time.monotonic() + 30
    while True:
        try:
            get(port, "/")
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_group(process)
                raise AssertionError("the test server did not start")
            time.sleep(0.05)


def stop_group(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(params=[("one", 1), ("keepalive", 4)], ids=["endpoint-worker", "function-worker"])
def server(request):
    process = start_server(*request.param)
    yield process
    stop_group(process)


@pytest.fixture
def endpoint_worker_server():
    process = start_server("one", 1)
    yield process
    stop_group(process)


def get(port, path, connection=None):
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read().decode(), response.will_close


def stop_and_time(process):
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    return time.monotonic() - started


def test_connections_are_kept_alive_between_requests(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    first = get(server.port, "/", connection)
    sock = connection.sock
    second = get(server.port, "/", connection)
    assert first[0] == second[0] == 200 and not first[2] and not second[2]
    assert connection.sock is sock, "the second request needed a new connection"


def test_an_idle_keep_alive_connection_does_not_hold_up_stopping(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    assert get(server.port, "/", connection)[0] == 200     # the connection stays open, idle, in the worker
    assert stop_and_time(server) < 5     # gunicorn 26's gthread worker alone would wait its 30 s graceful timeout


def test_a_request_in_flight_finishes_when_the_server_is_stopped(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", "/slow?s=1.5")
    time.sleep(0.3)
    server.send_signal(signal.SIGTERM)
    response = connection.getresponse()
    assert response.status == 200
    server.wait(timeout=30)


def test_a_request_stuck_past_the_timeout_gets_its_endpoint_worker_replaced(endpoint_worker_server):
    server = endpoint_worker_server
    before = int(get(server.port, "/")[1])
    stuck = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    stuck.request("GET", "/slow?s=20")
    started = time.monotonic()
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        stuck.getresponse()
    assert time.monotonic() - started < 10     # timeout 2 s, checked by gunicorn's master about once a second
    status, after, _ = get(server.port, "/")
    assert status == 200 and int(after) != before


def test_an_endpoint_worker_busy_with_short_requests_back_to_back_is_not_replaced(endpoint_worker_server):
    server = endpoint_worker_server
    pid = get(server.port, "/")[1]
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    deadline = time.monotonic() + 5      # 2.5 timeouts of requests of 1 s each, back to back
    while time.monotonic() < deadline:
        assert get(server.port, "/slow?s=1", connection)[:2] == (200, pid)
