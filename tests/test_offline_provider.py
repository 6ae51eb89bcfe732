"""The offline hashicorp/aws provider (terraform/offline_provider): the schema conversion from @cdktf/provider-aws,
the committed schema, the plugin itself spoken to over gRPC with Terraform's automatic TLS, and the real terraform
validating configurations against it."""

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from terraform import lint

REPO = Path(__file__).resolve().parent.parent
OFFLINE = REPO / "terraform" / "offline_provider"
# Where .ci/setup unpacks the npm package (npm pack), so that the committed schema is checked against it.
PACKAGE = REPO / ".cache" / "cdktf-provider-aws" / "package"


schema_tool = lint.load_file(OFFLINE / "schema_from_cdktf.py", "schema_from_cdktf")
provider = lint.load_offline_provider()


@pytest.fixture(scope="module")
def converter():
    if not (PACKAGE / ".jsii").exists():
        pytest.fail(f"{PACKAGE} is missing: `bash .ci/setup` unpacks {schema_tool.CDKTF_PACKAGE} there")
    return schema_tool.Converter(PACKAGE)


# ---------------------------------------------------------------------------------------------- conversion
def test_the_endpoint_configuration_keeps_its_blocks_nesting_and_flags(converter):
    block = converter.type_schema("resources", "aws_sagemaker_endpoint_configuration")
    variants = block["block_types"]["production_variants"]
    assert (variants["nesting"], variants.get("min_items"), variants.get("max_items")) == ("list", 1, None)
    capture = block["block_types"]["data_capture_config"]
    assert (capture["nesting"], capture.get("max_items")) == ("list", 1)
    assert capture["block"]["block_types"]["capture_options"]["min_items"] == 1
    assert capture["block"]["attributes"]["initial_sampling_percentage"] == {"type": "number", "required": True}
    header = capture["block"]["block_types"]["capture_content_type_header"]["block"]
    assert header["attributes"]["json_content_types"]["type"] == ["set", "string"]
    variant = variants["block"]["attributes"]
    assert variant["instance_type"] == {"type": "string", "optional": True}
    assert variant["variant_name"] == {"type": "string", "optional": True, "computed": True}
    assert block["attributes"]["arn"] == {"type": "string", "computed": True}
    assert block["attributes"]["tags"] == {"type": ["map", "string"], "optional": True}
    assert block["attributes"]["name"] == {"type": "string", "optional": True, "computed": True}


def test_data_sources_renamed_arguments_and_computed_nested_values_convert(converter):
    document = converter.type_schema("data_sources", "aws_iam_policy_document")
    assert document["attributes"]["json"] == {"type": "string", "computed": True}
    statement = document["block_types"]["statement"]
    assert statement["nesting"] == "list"
    assert statement["block"]["block_types"]["principals"]["nesting"] == "set"
    assert statement["block"]["attributes"]["actions"]["type"] == ["set", "string"]
    instance = converter.type_schema("resources", "aws_instance")
    # cdktf renames get_password_data (a getter name in JavaScript); the schema keeps Terraform's name.
    assert instance["attributes"]["get_password_data"]["type"] == "bool"
    assert instance["block_types"]["root_block_device"]["block"]["attributes"]["volume_id"]["computed"]
    ami = converter.type_schema("data_sources", "aws_ami")
    assert ami["attributes"]["state_reason"] == {"type": ["map", "string"], "computed": True}
    assert ami["attributes"]["block_device_mappings"]["type"][0] == "set"


def test_an_unknown_type_is_refused_by_name(converter):
    with pytest.raises(schema_tool.SchemaError, match="aws_no_such_thing"):
        converter.type_schema("resources", "aws_no_such_thing")


def test_the_committed_schema_is_what_the_package_regenerates(converter):
    regenerated = schema_tool.render(converter.schema(schema_tool.used_types()))
    assert regenerated == schema_tool.SCHEMA_FILE.read_text(), \
        "run `python terraform/offline_provider/schema_from_cdktf.py` and commit aws-schema.json"


def test_every_type_the_configuration_uses_is_in_the_committed_schema():
    committed = provider.load_schema()
    used = schema_tool.used_types()
    assert set(used["resources"]) <= set(committed["resources"])
    assert set(used["data_sources"]) <= set(committed["data_sources"])
    assert committed["provider_version"] == "6.25.0"
    assert {"region", "profile"} <= set(committed["provider"]["attributes"])
    assert "default_tags" in committed["provider"]["block_types"]


# ---------------------------------------------------------------------------------------------- the plugin
@pytest.fixture
def plugin():
    """The plugin process as Terraform starts it: magic cookie, protocol 6 offered, a client certificate for TLS."""
    client_key, client_certificate, _ = provider.server_certificate()
    env = dict(os.environ, TF_PLUGIN_MAGIC_COOKIE=provider.MAGIC_COOKIE_VALUE, PLUGIN_PROTOCOL_VERSIONS="5,6",
               PLUGIN_CLIENT_CERT=client_certificate.decode())
    process = subprocess.Popen([sys.executable, str(OFFLINE / "provider.py")],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        handshake = process.stdout.readline().strip().split("|")
        assert handshake[:3] == ["1", "6", "tcp"] and handshake[4] == "grpc", handshake
        assert handshake[3].startswith("127.0.0.1:")
        server_certificate = ssl.DER_cert_to_PEM_cert(base64.b64decode(handshake[5] + "=" * (-len(handshake[5]) % 4)))
        credentials = grpc.ssl_channel_credentials(root_certificates=server_certificate.encode(),
                                                   private_key=client_key, certificate_chain=client_certificate)
        # Terraform checks the certificate against the name localhost, whatever the address.
        channel = grpc.secure_channel(handshake[3], credentials, options=[("grpc.ssl_target_name_override", "localhost")])
        yield process, channel, provider.load_protocol()
        channel.close()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()


def call(channel, pb, method, request=None, service="tfplugin6.Provider"):
    message = getattr(pb, method)
    stub = channel.unary_unary(f"/{service}/{method}", request_serializer=message.Request.SerializeToString,
                               response_deserializer=message.Response.FromString)
    return stub(request or message.Request(), timeout=30)


def test_the_plugin_serves_the_schema_over_tls_and_refuses_what_needs_aws(plugin):
    process, channel, pb = plugin
    schema = call(channel, pb, "GetProviderSchema")
    configuration = schema.resource_schemas["aws_sagemaker_endpoint_configuration"].block
    variants = next(block for block in configuration.block_types if block.type_name == "production_variants")
    assert variants.nesting == pb.Schema.NestedBlock.LIST and variants.min_items == 1
    arn = next(attribute for attribute in configuration.attributes if attribute.name == "arn")
    assert json.loads(arn.type) == "string" and arn.computed and not arn.optional
    assert "aws_caller_identity" in schema.data_source_schemas
    assert any(attribute.name == "region" for attribute in schema.provider.block.attributes)

    known = call(channel, pb, "ValidateResourceConfig", pb.ValidateResourceConfig.Request(type_name="aws_instance"))
    assert list(known.diagnostics) == []
    planned = call(channel, pb, "PlanResourceChange", pb.PlanResourceChange.Request(type_name="aws_instance"))
    assert planned.diagnostics[0].severity == pb.Diagnostic.ERROR and "cannot reach AWS" in planned.diagnostics[0].detail

    shutdown = channel.unary_unary("/plugin.GRPCController/Shutdown", request_serializer=None,
                                   response_deserializer=None)
    shutdown(b"", timeout=30)
    assert process.wait(timeout=30) == 0


PARENT = """
import subprocess, sys
plugin = subprocess.Popen([sys.executable, sys.argv[1]], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
print(plugin.pid, plugin.stdout.readline().strip(), flush=True)
plugin.wait()
"""


def has_exited(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # an orphan nobody has reaped yet has exited all the same


def test_the_plugin_exits_when_terraform_is_killed_without_shutting_it_down():
    env = dict(os.environ, TF_PLUGIN_MAGIC_COOKIE=provider.MAGIC_COOKIE_VALUE, PLUGIN_PROTOCOL_VERSIONS="6")
    terraform = subprocess.Popen([sys.executable, "-c", PARENT, str(OFFLINE / "provider.py")], env=env,
                                 stdout=subprocess.PIPE, text=True)
    pid, handshake = terraform.stdout.readline().split()
    pid = int(pid)
    try:
        assert handshake.startswith("1|6|tcp|127.0.0.1:"), handshake
        terraform.kill()  # as lint's timeout does, or a crash: no Shutdown call reaches the plugin
        terraform.wait(timeout=30)
        deadline = time.monotonic() + 6
        while not has_exited(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert has_exited(pid), "the plugin outlived the terraform that started it"
    finally:
        terraform.stdout.close()
        if not has_exited(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_plugin_refuses_to_run_outside_terraform():
    env = {key: value for key, value in os.environ.items() if key != provider.MAGIC_COOKIE_KEY}
    result = subprocess.run([sys.executable, str(OFFLINE / "provider.py")], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert "plugin" in result.stderr and "Traceback" not in result.stderr


def test_terraform_rejects_an_unknown_argument_and_a_missing_block_against_the_schema(tmp_path):
    binary, version = lint.newest_terraform(lint.terraform_candidates(), lint.MIN_TEST_VERSION)
    assert binary is not None, f"terraform >= 1.7 is needed (newest found: {version})"
    work = tmp_path / "configuration"
    work.mkdir()
    (work / "main.tf").write_text(
        'terraform {\n  required_providers {\n    aws = { source = "hashicorp/aws", version = ">= 6.0" }\n  }\n}\n\n'
        'resource "aws_sagemaker_endpoint_configuration" "this" {\n  name          = "x"\n'
        '  instance_typo = "ml.m5.large"\n}\n')
    env, _ = lint.use_offline_provider(binary, tmp_path, lint._environment())
    init = subprocess.run([str(binary), "init", "-backend=false", "-no-color"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stdout + init.stderr
    validate = subprocess.run([str(binary), "validate", "-no-color"], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)
    assert validate.returncode == 1
    assert 'An argument named "instance_typo" is not expected here' in validate.stderr, validate.stderr
    assert 'At least 1 "production_variants" blocks are required' in validate.stderr, validate.stderr
