"""Secrets: nothing sensitive in Terraform outputs, in the function's environment, in the servers' environments or
in their logs. (HTTP answers carrying no stack trace or file path is checked on every bad request by
test_reliability_bad_input.py.)
"""

import base64
import json
import re
from pathlib import Path

import hcl2
import pytest

from local.stack import endpoint_workers, group_processes
from reliability_testlib import children, environ_of
from serving_testlib import image_bytes

TERRAFORM = Path(__file__).resolve().parent.parent / "terraform"
TF_DIRS = [TERRAFORM, *sorted(path for path in (TERRAFORM / "modules").iterdir() if path.is_dir())]
SECRET_WORDS = re.compile(r"secret|password|passwd|token|private_key|access_key|credential|api_key",
                          re.IGNORECASE)
SIGNED_QUERY = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIASIGNEDURLCANARY%2F20261126%2Fus-east-1%2Fs3"
                "%2Faws4_request&X-Amz-Security-Token=SIGNEDURLTOKENCANARY&X-Amz-Signature=5ec2e7c0ffee5ec2e7")
SIGNED_URL_CANARIES = ("AKIASIGNEDURLCANARY", "SIGNEDURLTOKENCANARY", "5ec2e7c0ffee5ec2e7")


def blocks(kind):
    """(directory, name, body) of every `output` or `variable` block in the root and the modules."""
    wraps = hcl2.loads("a = 1\n")["a"] == [1]
    for directory in TF_DIRS:
        for path in sorted(directory.glob("*.tf")):
            with open(path) as handle:
                for entry in hcl2.load(handle).get(kind, []):
                    for name, body in entry.items():
                        unwrapped = {key: (item[0] if wraps and isinstance(item, list) and len(item) == 1 else item)
                                     for key, item in body.items()}
                        yield directory.name, name, unwrapped


@pytest.mark.parametrize("kind", ["output", "variable"])
def test_terraform_inputs_and_outputs_that_could_hold_a_secret_are_marked_sensitive(kind):
    found = list(blocks(kind))
    assert len(found) > 20
    for directory, name, body in found:
        expression = str(body.get("value", ""))
        if SECRET_WORDS.search(name) or SECRET_WORDS.search(expression):
            assert body.get("sensitive") is True, f"{directory}: {kind} {name} may carry a secret: mark it sensitive"


def test_no_output_exposes_an_attribute_that_is_a_secret():
    secret_attributes = re.compile(r"\.(secret|password|private_key|access_key|secret_access_key|ses_smtp_password"
                                   r"|token|master_user_password|id_token)\b")
    for directory, name, body in blocks("output"):
        assert not secret_attributes.search(str(body.get("value", ""))), f"{directory}: output {name}"


def test_the_functions_environment_holds_only_its_endpoint_name_and_log_level():
    main = (TERRAFORM / "modules" / "lambda" / "main.tf").read_text()
    [block] = re.findall(r"environment \{\n\s*variables = merge\(var\.environment, \{(.*?)\}\)", main, re.S)
    assert set(re.findall(r"^\s*(\w+)\s*=", block, re.M)) == {"ENDPOINT_NAME", "LOG_LEVEL"}
    root = (TERRAFORM / "main.tf").read_text()
    lambda_module = re.search(r'module "lambda" \{(.*?)^\}', root, re.S | re.M).group(1)
    assert not re.search(r"^\s*environment\s*=", lambda_module, re.M), "the root passes extra environment"


def stack_processes(stack):
    """The servers' pids, and the function's execution environments (awslambdaric processes of its worker)."""
    state = json.loads((stack.settings.state_dir / "stack.json").read_text())
    stack.function.invoke(FunctionName="dog-breeds-local", Payload=b"{}")   # at least one environment runs
    processes = {"endpoint": group_processes(state["endpoint"]["pid"]),   # with TorchServe's frontend and workers
                 "function": [state["function"]["pid"], *children(state["function"]["pid"])]}
    environments = [pid for worker in children(state["function"]["pid"]) for pid in children(worker)]
    return processes, environments


def test_the_deployers_credentials_reach_neither_the_endpoint_nor_the_function(local_stack):
    processes, environments = stack_processes(local_stack)
    workers = endpoint_workers(json.loads((local_stack.settings.state_dir / "stack.json").read_text())["endpoint"])
    assert set(workers) <= set(processes["endpoint"]) and len(processes["endpoint"]) > len(workers) >= 1
    assert environments
    for component, pids in {**processes, "function environment": environments}.items():
        for pid in pids:
            environment = environ_of(pid)
            for name, canary in local_stack.canaries.items():
                assert canary not in "\0".join(environment.values()), f"{component} {pid} has the deployer's {name}"
            if component == "function environment":   # dummy keys for the local endpoint (on Lambda, the role's)
                assert environment.get("AWS_SECRET_ACCESS_KEY") == "local"
                assert "AWS_SESSION_TOKEN" not in environment
            else:   # on SageMaker the model gets its role from the instance; the function server needs none
                assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(environment)


def test_logs_hold_no_credentials_signed_url_parts_or_image_bytes(local_stack):
    images = local_stack.images
    picture = image_bytes(size=(200, 150), color=(1, 2, 3))
    images.image(f"/signed-dog.jpg?{SIGNED_QUERY}", picture)
    signed_url = images.url(f"/signed-dog.jpg?{SIGNED_QUERY}")
    encoded = base64.b64encode(picture).decode()
    for event in ({"url": signed_url}, {"image": encoded}, {"url": signed_url.replace("signed-dog", "missing")}):
        response = local_stack.function.invoke(FunctionName="dog-breeds-local", Payload=json.dumps(event).encode())
        answer = json.loads(response["Payload"].read())
        assert answer["statusCode"] in (200, 422), answer
        for canary in SIGNED_URL_CANARIES:
            assert canary not in answer["body"]

    logs = {name: (local_stack.settings.state_dir / f"{name}.log").read_text(errors="replace")
            for name in ("endpoint", "function")}
    assert "/signed-dog.jpg" in logs["function"], "the function should log which image it was asked for"
    for name, text in logs.items():
        for canary in (*SIGNED_URL_CANARIES, *local_stack.canaries.values()):
            assert canary not in text, f"the {name} log holds {canary}"
        assert encoded[100:160] not in text, f"the {name} log holds image bytes"
