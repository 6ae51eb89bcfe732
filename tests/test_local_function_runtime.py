"""The local function as Lambda runs it: each execution environment is an awslambdaric process, one event at a time.

A small test handler (behaviours.py, in its own function zip) does what each event asks: answer with what it sees,
sleep, raise, or exit. One server (reserved concurrency 3, timeout 2 s) is shared by the module, so its
environments are reused across tests where the behaviour under test allows; a second one serves a handler whose
import fails.
"""

import json
import os
import re
import signal
import sys
import threading
import time

import pytest

from function_testlib import FUNCTION_NAME, FunctionServer, build_zip, invoke
from local.procfs import is_running, parent_pid

TIMEOUT_S = 2
CONCURRENCY = 3
BEHAVIOURS = '''
import json, os, threading, time

ACTIVE = 0
MOST_ACTIVE = 0
LOCK = threading.Lock()
LAMBDA_VARIABLES = ("AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
                    "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_REGION", "AWS_DEFAULT_REGION",
                    "AWS_EXECUTION_ENV", "LAMBDA_TASK_ROOT", "_HANDLER", "AWS_LAMBDA_RUNTIME_API", "TZ",
                    "FUNCTION_SETTING", "PYTHONPATH")


def handler(event, context):
    global ACTIVE, MOST_ACTIVE
    with LOCK:
        ACTIVE += 1
        MOST_ACTIVE = max(MOST_ACTIVE, ACTIVE)
    try:
        action = event.get("action")
        if action == "sleep":
            time.sleep(event["seconds"])
        elif action == "raise":
            raise ValueError("the handler was told to fail")
        elif action == "exit":
            os._exit(3)
        elif action == "return":
            return "x" * event["characters"]
        print(json.dumps({"handled": context.aws_request_id}))
        return {"pid": os.getpid(), "cwd": os.getcwd(), "request_id": context.aws_request_id,
                "remaining_ms": context.get_remaining_time_in_millis(), "function_name": context.function_name,
                "memory_limit_in_mb": context.memory_limit_in_mb, "arn": context.invoked_function_arn,
                "custom": getattr(context.client_context, "custom", None) if context.client_context else None,
                "most_active": MOST_ACTIVE, "environment": {name: os.environ.get(name) for name in LAMBDA_VARIABLES}}
    finally:
        with LOCK:
            ACTIVE -= 1
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("function-runtime")
    zip_path = build_zip(root / "function.zip", {"behaviours.py": BEHAVIOURS})
    running = FunctionServer(root / "server", zip_path, handler="behaviours.handler", timeout_s=TIMEOUT_S,
                             reserved_concurrency=CONCURRENCY, environment={"FUNCTION_SETTING": "from --env"})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def report_line(log, request_id):
    [line] = [line for line in log.splitlines() if line.startswith(f"REPORT RequestId: {request_id}")]
    return line


def test_the_first_event_starts_an_environment_and_the_next_one_reuses_it_warm(server, client):
    assert server.status()["environments"] == []
    error, first = invoke(client, {})
    assert error is None
    error, second = invoke(client, {})
    assert error is None and second["pid"] == first["pid"]
    log = server.log()
    cold = report_line(log, first["request_id"])
    assert re.search(r"\tInit Duration: \d+\.\d\d ms", cold), cold
    assert re.search(r"Duration: \d+\.\d\d ms\tBilled Duration: \d+ ms\tMemory Size: 256 MB\tMax Memory Used: "
                     r"\d+ MB", cold)
    assert "Init Duration" not in report_line(log, second["request_id"])
    assert f"START RequestId: {second['request_id']} Version: $LATEST" in log
    assert json.dumps({"handled": second["request_id"]}) in log   # the handler's own output reaches the log
    status = server.status()
    assert (status["warm"], status["busy"], status["cold_starts"]) == (1, 0, 1)
    assert status["environments"][0]["pid"] == first["pid"]


def test_the_handler_sees_lambdas_environment_and_context(server, client):
    payload = invoke(client, {}, ClientContext="eyJjdXN0b20iOiB7ImNhbGxlciI6ICJ0ZXN0In19")[1]   # {"custom": ...}
    environment = payload["environment"]
    assert environment["AWS_LAMBDA_FUNCTION_NAME"] == payload["function_name"] == FUNCTION_NAME
    assert environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == payload["memory_limit_in_mb"] == "256"
    assert environment["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{FUNCTION_NAME}"
    assert environment["AWS_REGION"] == environment["AWS_DEFAULT_REGION"] == "us-east-1"
    assert environment["AWS_EXECUTION_ENV"] == "AWS_Lambda_python%d.%d" % sys.version_info[:2]   # what runs it
    assert environment["_HANDLER"] == "behaviours.handler"
    assert environment["LAMBDA_TASK_ROOT"] == payload["cwd"] == str(server.function_dir.resolve())
    assert environment["FUNCTION_SETTING"] == "from --env"
    assert environment["PYTHONPATH"] is None, "the handler must import from its zip alone"
    assert payload["arn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{FUNCTION_NAME}"
    assert 0 < payload["remaining_ms"] <= TIMEOUT_S * 1000
    assert payload["custom"] == {"caller": "test"}


def test_an_unhandled_exception_is_lambdas_unhandled_error_and_the_environment_goes_on(server, client):
    before = invoke(client, {})[1]["pid"]
    error, payload = invoke(client, {"action": "raise"})
    assert error == "Unhandled"
    assert payload["errorType"] == "ValueError" and payload["errorMessage"] == "the handler was told to fail"
    assert any("behaviours.py" in frame for frame in payload["stackTrace"])
    assert invoke(client, {})[1]["pid"] == before
    assert "[ERROR] ValueError: the handler was told to fail" in server.log()


def test_an_event_past_the_timeout_gets_lambdas_timeout_answer_and_a_new_environment_next(server, client):
    pid = invoke(client, {})[1]["pid"]
    started = time.monotonic()
    error, payload = invoke(client, {"action": "sleep", "seconds": 30})
    assert TIMEOUT_S <= time.monotonic() - started < TIMEOUT_S + 2
    assert error == "Unhandled" and payload["errorType"] == "Sandbox.Timedout"
    assert payload["errorMessage"].endswith(f"Task timed out after {TIMEOUT_S:.2f} seconds")
    assert pid not in [environment["pid"] for environment in server.status()["environments"]]
    after = invoke(client, {})
    assert after[0] is None and after[1]["pid"] != pid
    log = server.log()
    assert f"Task timed out after {TIMEOUT_S:.2f} seconds" in log and "\tStatus: timeout" in log


def test_a_runtime_that_exits_mid_event_is_a_runtime_exit_error(server, client):
    error, payload = invoke(client, {"action": "exit"})
    assert error == "Unhandled" and payload["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in payload["errorMessage"]
    assert invoke(client, {})[0] is None


def test_a_result_over_6_mb_is_lambdas_response_size_error_and_one_under_it_comes_back_whole(server, client):
    error, payload = invoke(client, {"action": "return", "characters": 6 * 1024 * 1024})
    assert error == "Unhandled" and payload["errorType"] == "Function.ResponseSizeTooLarge"
    error, payload = invoke(client, {"action": "return", "characters": 5 * 1024 * 1024})
    assert error is None and payload == "x" * (5 * 1024 * 1024)


def test_concurrent_events_run_in_separate_environments_and_one_more_is_throttled_at_once(server):
    clients = [server.client() for _ in range(CONCURRENCY)]
    answers = []
    callers = [threading.Thread(target=lambda c=c: answers.append(invoke(c, {"action": "sleep", "seconds": 1.2})))
               for c in clients]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + 20
    while server.status()["busy"] < CONCURRENCY:
        assert time.monotonic() < deadline, server.status()
        time.sleep(0.05)
    status = server.status()
    assert status["in_flight"] == CONCURRENCY and status["warm"] == 0
    one_more = server.client()
    started = time.monotonic()
    with pytest.raises(one_more.exceptions.TooManyRequestsException) as raised:
        invoke(one_more, {})
    assert time.monotonic() - started < 1
    assert raised.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    for caller in callers:
        caller.join(timeout=30)
    assert [error for error, _ in answers] == [None] * CONCURRENCY
    assert len({payload["pid"] for _, payload in answers}) == CONCURRENCY, "two events shared an environment"
    assert all(payload["most_active"] == 1 for _, payload in answers), "an environment ran two events at once"
    assert len(server.status()["environments"]) <= CONCURRENCY


def test_event_and_dry_run_invocations(server, client):
    assert client.invoke(FunctionName=FUNCTION_NAME, InvocationType="DryRun")["StatusCode"] == 204
    response = client.invoke(FunctionName=FUNCTION_NAME, InvocationType="Event", Payload=b'{"tag": "async"}')
    assert response["StatusCode"] == 202
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="another-function", Payload=b"{}")


def test_an_import_error_at_init_is_answered_as_lambda_does_and_the_server_survives(tmp_path):
    zip_path = build_zip(tmp_path / "broken.zip", {"broken.py": "import no_such_module_anywhere\n"})
    broken = FunctionServer(tmp_path / "server", zip_path, handler="broken.handler")
    try:
        client = broken.client()
        for _ in range(2):   # each event tries a new environment, as Lambda retries init
            error, payload = invoke(client, {})
            assert error == "Unhandled"
            assert payload["errorType"] == "Runtime.ImportModuleError"
            assert payload["errorMessage"] == ("Unable to import module 'broken': No module named "
                                               "'no_such_module_anywhere'")
        status = broken.status()
        assert status["environments"] == [] and status["in_flight"] == 0 and status["cold_starts"] == 2
        assert "INIT_REPORT Init Duration" in broken.log() and "Runtime.ImportModuleError" in broken.log()
    finally:
        broken.stop()


def test_stopping_the_server_stops_its_environments(tmp_path):
    zip_path = build_zip(tmp_path / "function.zip", {"behaviours.py": BEHAVIOURS})
    running = FunctionServer(tmp_path / "server", zip_path, handler="behaviours.handler")
    client = running.client()
    pid = invoke(client, {})[1]["pid"]
    running.stop()
    deadline = time.monotonic() + 5
    while is_running(pid):
        assert time.monotonic() < deadline, "the environment outlived its server"
        time.sleep(0.05)


def test_an_environment_whose_server_worker_is_killed_exits_by_itself(tmp_path):
    zip_path = build_zip(tmp_path / "function.zip", {"behaviours.py": BEHAVIOURS})
    running = FunctionServer(tmp_path / "server", zip_path, handler="behaviours.handler")
    try:
        pid = invoke(running.client(), {})[1]["pid"]
        worker = parent_pid(pid)
        os.kill(worker, signal.SIGKILL)   # no exit hook runs: the environment loses its Runtime API connection
        deadline = time.monotonic() + 10
        while is_running(pid):
            assert time.monotonic() < deadline, "the environment outlived its killed worker"
            time.sleep(0.05)
    finally:
        running.stop()


