"""The local stack's settings come from invoke.yaml / INVOKE_* and bad ones stop deploy with one line; which runtime
the endpoint runs on; the one request size limit."""

import os
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest

from configuration.values import SettingError
from local.errors import StackError
from local.servers import container_environment, endpoint_runtime
from local.settings import REPO_ROOT, LocalSettings

INVOKE = str(Path(sys.executable).parent / "invoke")


def test_settings_from_invoke_config_with_paths_under_the_repository():
    settings = LocalSettings.from_config({
        "local": {"state_dir": "my-state", "endpoint_port": 18080, "function_port": 19001, "endpoint_workers": 3,
                  "reserved_concurrency": 4, "url_allow_networks": "127.0.0.1/32", "image_fetch_timeout_s": 2},
        "train": {"model_dir": "/abs/model", "archive": "out/model.tar.gz"},
        "aws": {"region": "eu-west-1"},
    })
    assert settings.state_dir == REPO_ROOT / "my-state"
    assert settings.model_dir == Path("/abs/model") and settings.archive == REPO_ROOT / "out/model.tar.gz"
    assert (settings.endpoint_url, settings.function_url) == ("http://127.0.0.1:18080", "http://127.0.0.1:19001")
    assert (settings.endpoint_workers, settings.reserved_concurrency, settings.region) == (3, 4, "eu-west-1")
    assert settings.image_fetch_timeout_s == 2.0


def test_the_url_allow_list_is_off_unless_set():
    assert LocalSettings.from_config({"local": {}}).url_allow_networks == ""


def test_a_bad_allow_list_stops_deploy_with_one_line(tmp_path):
    env = {**os.environ, "INVOKE_LOCAL_URL_ALLOW_NETWORKS": "localhost",
           "INVOKE_LOCAL_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run([INVOKE, "deploy"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == ("deploy failed: local.url_allow_networks: 'localhost' is not an address or "
                                     "CIDR (e.g. 127.0.0.1/32)")
    assert not (tmp_path / "state").exists()


def test_the_local_function_runs_with_terraforms_handler_settings_and_environment():
    import re

    import hcl2

    from local.function_settings import TERRAFORM_DIR, terraform_function
    from local.function_server import get_args_parser
    from local.servers import function_environment

    with open(TERRAFORM_DIR / "modules" / "lambda" / "variables.tf") as handle:
        module = {name: body["default"] for entry in hcl2.load(handle)["variable"] for name, body in entry.items()
                  if "default" in body}
    unwrap = {name: value[0] if isinstance(value, list) else value for name, value in module.items()}
    function = terraform_function()
    assert (function.handler, function.runtime, function.timeout_s, function.memory_mb,
            function.reserved_concurrency, function.log_level) == (
        unwrap["handler"], unwrap["runtime"], unwrap["timeout"], unwrap["memory_size"],
        unwrap["reserved_concurrency"], unwrap["log_level"])   # the root's defaults agree with the module's
    server = get_args_parser().parse_args(["--zip", "f.zip", "--function-dir", "d"])
    assert (server.handler, server.timeout, server.memory_size, server.reserved_concurrency) == (
        function.handler, function.timeout_s, function.memory_mb, function.reserved_concurrency)

    main = (TERRAFORM_DIR / "modules" / "lambda" / "main.tf").read_text()
    [block] = re.findall(r"environment \{\n\s*variables = merge\(var\.environment, \{(.*?)\}\)", main, re.S)
    terraform_names = set(re.findall(r"^\s*(\w+)\s*=", block, re.M))
    environment = function_environment(LocalSettings(state_dir=REPO_ROOT / ".state", endpoint_port=18080))
    assert set(environment) - terraform_names == {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "AWS_ACCESS_KEY_ID",
                                                  "AWS_SECRET_ACCESS_KEY"}
    assert terraform_names <= set(environment)
    assert environment["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == "http://127.0.0.1:18080"


def _fake_java(tmp_path, version_line):
    """A `java` on PATH that answers -version as the real one does: on stderr."""
    bin_dir = tmp_path / version_line.split('"')[1]
    bin_dir.mkdir()
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("version_line, major, runtime", [
    ('java version "1.8.0_381"', 8, "builtin"),
    ('openjdk version "11.0.20" 2023-07-18', 11, "toolkit"),
    ('openjdk version "17.0.12" 2024-07-16', 17, "toolkit"),
    ('openjdk version "21" 2023-09-19', 21, "toolkit"),
])
def test_the_endpoint_runtime_is_the_toolkit_where_java_11_runs_unless_set_to_builtin(
        monkeypatch, tmp_path, version_line, major, runtime):
    from local.toolkit_endpoint import java_major_version, toolkit_installed

    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", f"{_fake_java(tmp_path, version_line)}{os.pathsep}{os.environ['PATH']}")
    assert java_major_version() == major
    expected = runtime if toolkit_installed() else "builtin"   # .ci/setup installs the toolkit, so CI checks both
    assert endpoint_runtime(LocalSettings(state_dir=tmp_path))[0] == expected
    assert endpoint_runtime(LocalSettings(state_dir=tmp_path, endpoint_runtime="builtin"))[0] == "builtin"
    assert LocalSettings.from_config({"local": {"endpoint_runtime": "builtin"}}).endpoint_runtime == "builtin"


def test_without_java_auto_falls_back_to_builtin_and_toolkit_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))   # a Java home without bin/java
    assert endpoint_runtime(LocalSettings(state_dir=tmp_path))[0] == "builtin"
    with pytest.raises(StackError, match="local.endpoint_runtime is toolkit but no Java 11 or newer"):
        endpoint_runtime(LocalSettings(state_dir=tmp_path, endpoint_runtime="toolkit"))
    with pytest.raises(SettingError, match="local.endpoint_runtime .*'docker' is not one of toolkit, builtin, auto"):
        LocalSettings(state_dir=tmp_path, endpoint_runtime="docker")


def test_one_request_size_limit_in_the_handler_the_container_environment_and_the_local_endpoints():
    import inference

    environment = container_environment(LocalSettings(state_dir=REPO_ROOT / ".state"))
    assert int(environment["TS_MAX_REQUEST_SIZE"]) == inference.MAX_REQUEST_BYTES
    invoke_endpoint = botocore.session.get_session().get_service_model("sagemaker-runtime")
    body = invoke_endpoint.operation_model("InvokeEndpoint").input_shape.members["Body"]
    assert body.metadata["max"] == inference.MAX_REQUEST_BYTES   # nothing larger reaches a SageMaker container
