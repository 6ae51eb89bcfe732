"""`invoke ui`: MLflow's own UI (`mlflow server`) on the project's store, on 127.0.0.1, until Ctrl-C.

The server runs in its own process group, so Ctrl-C (or SIGTERM) reaches this process only, which then stops the
server and its workers and waits for them: nothing is left listening. Its log is <store>/ui.log.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request

from invoke.exceptions import Exit

from local.ports import port_free
from training.tracking import ARTIFACTS, store_uri

HOST = "127.0.0.1"


def server_command(store, port):
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri(store),
            "--default-artifact-root", (store / ARTIFACTS).as_uri(), "--host", HOST, "--port", str(port),
            "--workers", "1"]


def serve(store, port, *, start_timeout_s=120.0, out=sys.stdout):
    """Serve `store` on http://127.0.0.1:<port> until Ctrl-C (or the server ends); Exit with one line when the port
    is taken or the server does not start."""
    if not str(port).isdigit() or not 0 < int(port) < 65536:
        raise Exit(f"--port must be a port number (1-65535), not {port!r}")
    port = int(port)
    if not port_free(HOST, port):
        raise Exit(f"port {port} on {HOST} is taken (another `invoke ui`?): stop that, or set tracking.ui_port "
                   f"(INVOKE_TRACKING_UI_PORT) to a free port")
    store.mkdir(parents=True, exist_ok=True)
    url = f"http://{HOST}:{port}"
    print(f"starting MLflow's UI on {store} ...", file=out, flush=True)
    log_file = store / "ui.log"
    with open(log_file, "wb") as server_log:
        server = subprocess.Popen(server_command(store, port), stdout=server_log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    stop_signals = {number: signal.signal(number, _interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        _wait_until_up(server, url, log_file, start_timeout_s, out)
        if os.environ.get("MLFLOW_TRACKING_URI"):
            print(f"note: MLFLOW_TRACKING_URI is set, so `invoke train` logs to {os.environ['MLFLOW_TRACKING_URI']}, "
                  "not to this store", file=out, flush=True)
        print(f"MLflow UI: {url} (Ctrl-C stops it)", file=out, flush=True)
        server.wait()
        raise Exit(f"the MLflow server stopped by itself (status {server.returncode})")
    except KeyboardInterrupt:
        print("\nstopping the MLflow UI", file=out, flush=True)
    finally:
        _stop(server)
        for number, handler in stop_signals.items():
            signal.signal(number, handler)


def _interrupt(number, frame):
    """SIGTERM or SIGHUP (a closed terminal, `kill`) stops the server as Ctrl-C does."""
    raise KeyboardInterrupt


def _wait_until_up(server, url, log_file, timeout_s, out):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
            raise Exit(f"the MLflow server did not start (status {server.returncode}, log {log_file}): "
                       f"{lines[-1].strip() if lines else 'no output'}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        print(".", end="", file=out, flush=True)
        time.sleep(1)
    raise Exit(f"the MLflow server did not answer on {url} within {timeout_s:.0f} s")


def _stop(server):
    """SIGTERM to the server's process group, SIGKILL after 10 s."""
    if server.poll() is None:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        except ProcessLookupError:
            pass
