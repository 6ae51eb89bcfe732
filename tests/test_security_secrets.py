"""Secrets: nothing sensitive in Terraform outputs, in the function's environment, in the servers' environments or
in their logs. (HTTP answers carrying no stack trace or file path is checked on every bad request by
test_reliability_bad_input.py.)
"""

import base64
import json
import re
import secrets
import subprocess
from pathlib import Path

import hcl2
import pytest
from detect_secrets import SecretsCollection
from detect_secrets.settings import transient_settings

from local.procfs import children, environ_of, group_processes
from local.stack import endpoint_workers
from serving_testlib import image_bytes

REPO = Path(__file__).resolve().parent.parent
TERRAFORM = REPO / "terraform"
BASELINE = REPO / ".secrets.baseline"   # detect-secrets' audited false positives
TF_DIRS = [TERRAFORM, *sorted(path for path in (TERRAFORM / "modules").iterdir() if path.is_dir())]
SECRET_WORDS = re.compile(r"secret|password|passwd|token|private_key|access_key|credential|api_key",
                          re.IGNORECASE)
SECRET_ATTRIBUTES = re.compile(r"\.(secret|password|private_key|access_key|secret_access_key|ses_smtp_password(_v4)?"
                               r"|token|master_user_password|id_token)\b")
SIGNED_QUERY = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIASIGNEDURLCANARY%2F20261126%2Fus-east-1%2Fs3"
                "%2Faws4_request&X-Amz-Security-Token=SIGNEDURLTOKENCANARY&X-Amz-Signature=5ec2e7c0ffee5ec2e7")
SIGNED_URL_CANARIES = ("AKIASIGNEDURLCANARY", "SIGNEDURLTOKENCANARY", "5ec2e7c0ffee5ec2e7")


def blocks(directory, kind):
    """(name, body) of every `output`, `variable` or `module` block of a configuration folder."""
    wraps = hcl2.loads("a = 1\n")["a"] == [1]
    for path in sorted(Path(directory).glob("*.tf")):
        with open(path) as handle:
            for entry in hcl2.load(handle).get(kind, []):
                for name, body in entry.items():
                    yield name, {key: (item[0] if wraps and isinstance(item, list) and len(item) == 1 else item)
                                 for key, item in body.items()}


def secret_exposures(directory):
    """What a reviewer refuses in a configuration folder: an input or output whose name or value looks like a
    secret and is not marked sensitive, and any output of an attribute that is a secret (marked or not)."""
    found = []
    for kind in ("variable", "output"):
        for name, body in blocks(directory, kind):
            value = str(body.get("value", ""))
            if (SECRET_WORDS.search(name) or SECRET_WORDS.search(value)) and body.get("sensitive") is not True:
                found.append(f"{kind} {name} may carry a secret: mark it sensitive")
            if kind == "output" and SECRET_ATTRIBUTES.search(value):
                found.append(f"output {name} exposes a secret attribute: {value}")
    return found


@pytest.mark.parametrize("directory", TF_DIRS, ids=lambda path: path.name)
def test_no_terraform_input_or_output_exposes_a_secret(directory):
    assert secret_exposures(directory) == []


def test_the_exposure_check_refuses_unmarked_secret_inputs_and_secret_attribute_outputs(tmp_path):
    (tmp_path / "variables.tf").write_text(
        'variable "db_password" {\n  type = string\n}\n\n'
        'variable "api_token" {\n  type      = string\n  sensitive = true\n}\n')
    (tmp_path / "outputs.tf").write_text(
        'output "access_key_id" {\n  value = aws_iam_access_key.this.id\n}\n\n'
        'output "smtp" {\n  value     = aws_iam_access_key.this.ses_smtp_password_v4\n  sensitive = true\n}\n\n'
        'output "user_name" {\n  value = aws_iam_user.this.name\n}\n')
    assert secret_exposures(tmp_path) == [
        "variable db_password may carry a secret: mark it sensitive",
        "output access_key_id may carry a secret: mark it sensitive",
        "output smtp exposes a secret attribute: ${aws_iam_access_key.this.ses_smtp_password_v4}",
    ]


def test_the_root_adds_nothing_to_the_functions_environment():
    # What the lambda module puts there (ENDPOINT_NAME and LOG_LEVEL only) is planned in terraform/tests/lambda.tftest.hcl.
    [(_, function)] = [(name, body) for name, body in blocks(TERRAFORM, "module") if name == "lambda"]
    assert function["source"] == "./modules/lambda"
    assert "environment" not in function, "the root passes the function extra environment variables"


def unaudited_secrets(paths):
    """Secrets detect-secrets finds in `paths` (relative to the repository) that the audited baseline does not list
    as false positives: "file:line: type". A known value is known wherever it moves."""
    audited = json.loads(BASELINE.read_text())
    known = {(secret["type"], secret["hashed_secret"]) for secrets in audited["results"].values()
             for secret in secrets if secret.get("is_secret") is False}
    found = SecretsCollection(root=str(REPO))
    with transient_settings({key: audited[key] for key in ("plugins_used", "filters_used")}):
        for path in paths:   # one process: a pool would fork a test process that may hold threads
            found.scan_file(str(path))
    return sorted(f"{filename}:{secret.line_number}: {secret.type}" for filename, secret in found
                  if (secret.type, secret.secret_hash) not in known)


def tracked_files():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [path for path in listed.decode().split("\0") if path and path != BASELINE.name]


def test_no_tracked_file_holds_a_secret_the_baseline_has_not_audited():
    assert all(secret.get("is_secret") is False
               for secrets in json.loads(BASELINE.read_text())["results"].values() for secret in secrets), \
        f"{BASELINE.name} lists a finding that is not audited as a false positive"
    assert unaudited_secrets(tracked_files()) == [], \
        f"remove the secret, or audit it: detect-secrets scan --baseline {BASELINE.name}; detect-secrets audit {BASELINE.name}"


def test_the_secret_scan_finds_a_key_written_into_a_file(tmp_path):
    key_id = "AKIA" + secrets.token_hex(8).upper()   # made here, so that no tracked file holds one
    leaked = tmp_path / "settings.py"
    leaked.write_text(f'AWS_ACCESS_KEY_ID = "{key_id}"\nAWS_SECRET_ACCESS_KEY = "{secrets.token_urlsafe(30)}"\n')
    found = unaudited_secrets([leaked])
    assert f"{leaked}:1: AWS Access Key" in found and f"{leaked}:2: Secret Keyword" in found, found


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
