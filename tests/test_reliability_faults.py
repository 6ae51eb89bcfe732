"""Faults: an endpoint worker killed under load, and `invoke deploy` interrupted half-way.

Covered elsewhere and not repeated here (docs/reliability.md lists them): training SIGTERM resume and the corrupt
checkpoint fallback (test_training_pipeline.py), the data download's resume and corrupt-archive rejection
(test_data_download.py), a deploy killed with SIGKILL cleaned up by `invoke destroy` and a killed worker replaced
on an idle stack (test_local_stack_e2e.py).
"""

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


from local.stack import endpoint_workers
from local.ports import free_port
from local.procfs import processes_naming
from reliability_testlib import REPO_ROOT, write_report
from serving_testlib import image_bytes

FUNCTION = "dog-breeds-local"
IMAGE_EVENT = {"image": base64.b64encode(image_bytes(size=(320, 240))).decode(), "top_k": 1}
RECOVERY_LIMIT_S = 60.0   # a bound on "recovers at all"; how fast is a figure in the report (TorchServe starts a
                          # fresh Python worker, seconds of imports on a busy machine; gunicorn forks a loaded one)
# What the function answers for a request whose endpoint worker died under it: TorchServe answers it 507 "Worker
# died." (a ModelError), gunicorn drops the connection (botocore retries once, then an EndpointError).
CRASH_ANSWER = {"toolkit": (502, "ModelError"), "builtin": (502, "EndpointError")}
ATTEMPTS = {"toolkit": 1, "builtin": 2}   # botocore retries a dropped connection once, never a ModelError


def call(client, event):
    """(statusCode, error code) of one invocation; the function must never raise."""
    response = client.invoke(FunctionName=FUNCTION, Payload=json.dumps(event).encode())
    answer = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, answer
    body = json.loads(answer["body"])
    return answer["statusCode"], body.get("error") if isinstance(body, dict) else None


def endpoint_record(stack):
    return json.loads((stack.settings.state_dir / "stack.json").read_text())["endpoint"]


def wait_until_replaced(record, expected, victims, began):
    """Seconds from `began` until the endpoint has its full count of workers again, each with the model loaded."""
    while time.monotonic() - began < RECOVERY_LIMIT_S:
        current = endpoint_workers(record)
        if len(current) == expected and not set(current) & set(victims) and all(current.values()):
            return time.monotonic() - began
        time.sleep(0.02)
    raise AssertionError(f"the killed worker was not replaced within {RECOVERY_LIMIT_S:.0f} s")


def sockets_of(pid):
    """Socket inodes a process holds (empty once it has gone)."""
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return set()
    inodes = set()
    for fd in descriptors:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def workers_talking_to(port, workers):
    """The workers holding an established TCP connection to `port` on loopback (an image fetch in flight)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return [pid for pid in workers if sockets_of(pid) & inodes]


def test_a_worker_killed_under_load_fails_at_most_its_one_request_and_is_replaced(local_stack):
    record = endpoint_record(local_stack)
    workers = sorted(endpoint_workers(record))
    clients = [local_stack.new_function_client() for _ in range(6)]   # more callers than workers: both always busy
    results, stop = [], threading.Event()

    def caller(client):
        while not stop.is_set():
            began = time.monotonic()
            status = call(client, IMAGE_EVENT)
            results.append((began, time.monotonic(), status))

    threads = [threading.Thread(target=caller, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        victim = workers[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        recovered_s = wait_until_replaced(record, len(workers), [victim], killed_at)
        time.sleep(2)   # keep the load on the new worker for a while
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)

    failures = [(began, ended, status) for began, ended, status in results if status[0] != 200]
    after_recovery = [status for began, _, status in results if began > killed_at + recovered_s]
    write_report("faults", {"worker_killed_under_load": {
        "requests": len(results), "failed": len(failures), "failed_statuses": [status for _, _, status in failures],
        "replaced_and_loaded_s": round(recovered_s, 2), "requests_after_recovery": len(after_recovery),
        "requests_after_recovery_failed": sum(1 for status in after_recovery if status[0] != 200)}})
    # A sync worker holds one request; the function's one retry usually saves even that one.
    assert len(failures) <= 1, failures
    for began, ended, status in failures:
        assert status == CRASH_ANSWER[record["runtime"]], status
        if record["runtime"] == "builtin":
            assert began <= killed_at <= ended, "a request that was not in flight on the killed worker failed"
        else:   # the one in flight, or the one TorchServe hands the dead worker before it notices
            assert ended >= killed_at, "a request that ended before the kill failed"
    assert after_recovery and all(status[0] == 200 for status in after_recovery)


def test_a_request_whose_worker_dies_on_every_attempt_is_reported_as_a_502_and_the_stack_recovers(local_stack):
    images = local_stack.images
    images.image("/fault.jpg", image_bytes())
    record = endpoint_record(local_stack)
    expected = len(endpoint_workers(record))
    client = local_stack.new_function_client()
    answer, killed = [], []
    images.gate.clear()
    caller = threading.Thread(target=lambda: answer.append(call(client, {"url": images.url("/gated/fault.jpg")})))
    caller.start()
    try:
        # Kill the worker holding the fetch on every attempt the function makes (ATTEMPTS).
        deadline = time.monotonic() + 60
        while caller.is_alive() and time.monotonic() < deadline:
            busy = [pid for pid in workers_talking_to(images.port, endpoint_workers(record)) if pid not in killed]
            for pid in busy:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                last_kill = time.monotonic()
            time.sleep(0.01)
    finally:
        images.gate.set()
        caller.join(timeout=60)
    recovered_s = wait_until_replaced(record, expected, killed, last_kill)
    healthy_s = None
    while time.monotonic() - last_kill < RECOVERY_LIMIT_S:
        if call(client, IMAGE_EVENT)[0] == 200:
            healthy_s = time.monotonic() - last_kill
            break
    write_report("faults", {"worker_killed_on_every_attempt": {
        "workers_killed": len(killed), "function_answer": answer, "replaced_and_loaded_s": round(recovered_s, 2),
        "first_good_answer_s": round(healthy_s, 2) if healthy_s is not None else None}})
    assert len(killed) == ATTEMPTS[record["runtime"]], killed
    assert answer == [CRASH_ANSWER[record["runtime"]]]
    assert healthy_s is not None


def test_deploy_interrupted_half_way_stops_what_it_started(trained_model_dir, tmp_path):
    state_dir = tmp_path / "state"
    env = {**os.environ, "INVOKE_TARGET": "local", "INVOKE_TRAIN_MODEL_DIR": str(trained_model_dir),
           "INVOKE_TRAIN_ARCHIVE": str(trained_model_dir.parent / "model.tar.gz"),
           "INVOKE_LOCAL_STATE_DIR": str(state_dir), "INVOKE_LOCAL_ENDPOINT_PORT": str(free_port()),
           "INVOKE_LOCAL_FUNCTION_PORT": str(free_port())}
    # Ctrl-C reaches a deploy started from a terminal. Started from a background job (`.ci/run &`), this test would
    # pass on SIGINT ignored, and Python would then never raise KeyboardInterrupt: give the deploy the terminal's.
    deploying = subprocess.Popen([str(Path(sys.executable).parent / "invoke"), "deploy"], cwd=REPO_ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while True:
            state = json.loads((state_dir / "stack.json").read_text()) if (state_dir / "stack.json").exists() else {}
            if "function" in state:
                break
            assert deploying.poll() is None and time.monotonic() < deadline, "deploy never started its servers"
            time.sleep(0.05)
        assert processes_naming(str(state_dir)), "the servers should be starting"
        deploying.send_signal(signal.SIGINT)   # Ctrl-C half-way
        stdout, stderr = deploying.communicate(timeout=60)
    finally:
        if deploying.poll() is None:
            deploying.kill()
    left = processes_naming(str(state_dir))
    write_report("faults", {"deploy_interrupted": {"exit_code": deploying.returncode, "message": stderr.strip(),
                                                   "processes_left": len(left)}})
    for pid in left:                           # a failed run must not leave servers behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert deploying.returncode != 0
    assert stderr.strip() == "deploy interrupted: everything it had started was stopped"
    assert left == []
    assert not (state_dir / "stack.json").exists()
