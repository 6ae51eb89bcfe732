"""A schema-only hashicorp/aws provider plugin, so the real terraform can validate and test the modules offline.

Terraform starts it like any provider (plugin protocol 6 over gRPC, go-plugin's handshake and automatic mutual TLS)
and gets the schema of aws-schema.json (see schema_from_cdktf.py). That is all `terraform validate` and the
`mock_provider` runs of `terraform test` need: Terraform itself checks every argument, block and type against the
schema, and mock_provider plans and applies without the provider. Anything that would reach AWS (planning or applying
for real, reading a data source) gets an error diagnostic saying so.

install(folder) lays it out as a filesystem mirror for a CLI configuration (what terraform/lint.py does);
`python provider.py --schema FILE` is the plugin process itself.
"""

import argparse
import base64
import datetime
import json
import os
import shlex
import stat
import sys
import threading
from concurrent import futures
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMA_FILE = HERE / "aws-schema.json"
# go-plugin's handshake: Terraform sets this cookie for its plugins, and the core protocol version is always 1.
MAGIC_COOKIE_KEY = "TF_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"
CORE_PROTOCOL_VERSION = 1
PLUGIN_PROTOCOL_VERSION = 6
PROVIDER_ADDRESS = "registry.terraform.io/hashicorp/aws"
NOT_AVAILABLE = ("This is the offline, schema-only hashicorp/aws provider (terraform/offline_provider): it checks "
                 "configurations and serves mock_provider tests, it cannot reach AWS. Install the real provider "
                 "(terraform init with network access) to plan or apply.")
NESTING = {"single": 1, "list": 2, "set": 3, "map": 4, "group": 5}
PARENT_POLL_S = 1.0


def load_protocol():
    """The message classes of plugin protocol 6.5 (PyPI's tfplugin-proto-all, generated from hashicorp/terraform's
    tfplugin6.proto). Terraform 1.11 speaks 6.8, whose additions are all optional for a provider."""
    from tfplugin_proto import tfplugin6_5_pb2

    return tfplugin6_5_pb2


def load_schema(path=SCHEMA_FILE):
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------------------------- schema -> proto
def block_message(pb, block):
    message = pb.Schema.Block()
    for name in sorted(block.get("attributes", {})):
        attribute = block["attributes"][name]
        message.attributes.append(pb.Schema.Attribute(
            name=name, type=json.dumps(attribute["type"]).encode(), required=attribute.get("required", False),
            optional=attribute.get("optional", False), computed=attribute.get("computed", False),
            sensitive=attribute.get("sensitive", False)))
    for name in sorted(block.get("block_types", {})):
        nested = block["block_types"][name]
        message.block_types.append(pb.Schema.NestedBlock(
            type_name=name, block=block_message(pb, nested["block"]), nesting=NESTING[nested["nesting"]],
            min_items=nested.get("min_items", 0), max_items=nested.get("max_items", 0)))
    return message


def schema_message(pb, block):
    return pb.Schema(version=0, block=block_message(pb, block))


def provider_schema_response(pb, schema):
    response = pb.GetProviderSchema.Response(
        provider=schema_message(pb, schema["provider"]), provider_meta=schema_message(pb, {}),
        server_capabilities=pb.ServerCapabilities(get_provider_schema_optional=False))
    for name, block in schema["resources"].items():
        response.resource_schemas[name].CopyFrom(schema_message(pb, block))
    for name, block in schema["data_sources"].items():
        response.data_source_schemas[name].CopyFrom(schema_message(pb, block))
    return response


# ---------------------------------------------------------------------------------------------- the service
class SchemaOnlyProvider:
    """The tfplugin6.Provider methods Terraform calls to validate and to run mock_provider tests."""

    def __init__(self, pb, schema, stop):
        self.pb, self.schema, self.stop = pb, schema, stop
        self._schema_response = provider_schema_response(pb, schema)

    def _not_available(self, response_class):
        def method(request, context):
            return response_class(diagnostics=[self.pb.Diagnostic(
                severity=self.pb.Diagnostic.ERROR, summary="Not available offline", detail=NOT_AVAILABLE)])
        return method

    def handlers(self):
        pb = self.pb
        return {
            "GetMetadata": (pb.GetMetadata, lambda request, context: pb.GetMetadata.Response(
                server_capabilities=pb.ServerCapabilities(),
                resources=[pb.GetMetadata.ResourceMetadata(type_name=name) for name in self.schema["resources"]],
                data_sources=[pb.GetMetadata.DataSourceMetadata(type_name=name)
                              for name in self.schema["data_sources"]])),
            "GetProviderSchema": (pb.GetProviderSchema, lambda request, context: self._schema_response),
            "ValidateProviderConfig": (pb.ValidateProviderConfig,
                                       lambda request, context: pb.ValidateProviderConfig.Response()),
            # Terraform checks each configuration against the schema first, a type missing from it included ("does
            # not support resource type": lint.py adds how to regenerate the schema); nothing is left to check here.
            "ValidateResourceConfig": (pb.ValidateResourceConfig,
                                       lambda request, context: pb.ValidateResourceConfig.Response()),
            "ValidateDataResourceConfig": (pb.ValidateDataResourceConfig,
                                           lambda request, context: pb.ValidateDataResourceConfig.Response()),
            "ConfigureProvider": (pb.ConfigureProvider, lambda request, context: pb.ConfigureProvider.Response()),
            "GetFunctions": (pb.GetFunctions, lambda request, context: pb.GetFunctions.Response()),
            "StopProvider": (pb.StopProvider, lambda request, context: pb.StopProvider.Response()),
            "ReadResource": (pb.ReadResource, self._not_available(pb.ReadResource.Response)),
            "PlanResourceChange": (pb.PlanResourceChange, self._not_available(pb.PlanResourceChange.Response)),
            "ApplyResourceChange": (pb.ApplyResourceChange, self._not_available(pb.ApplyResourceChange.Response)),
            "ImportResourceState": (pb.ImportResourceState, self._not_available(pb.ImportResourceState.Response)),
            "ReadDataSource": (pb.ReadDataSource, self._not_available(pb.ReadDataSource.Response)),
            "UpgradeResourceState": (pb.UpgradeResourceState, self._not_available(pb.UpgradeResourceState.Response)),
        }

    def generic_handlers(self):
        import grpc

        methods = {name: grpc.unary_unary_rpc_method_handler(
            function, request_deserializer=message.Request.FromString,
            response_serializer=message.Response.SerializeToString)
            for name, (message, function) in self.handlers().items()}

        def shutdown(request, context):
            self.stop.set()
            return b""

        raw = {"request_deserializer": None, "response_serializer": None}
        return [
            grpc.method_handlers_generic_handler("tfplugin6.Provider", methods),
            # go-plugin's own services: the controller that asks a plugin to exit, and the health check.
            grpc.method_handlers_generic_handler("plugin.GRPCController", {
                "Shutdown": grpc.unary_unary_rpc_method_handler(shutdown, **raw)}),
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
                "Check": grpc.unary_unary_rpc_method_handler(lambda request, context: b"\x08\x01", **raw)}),  # SERVING
        ]


# ---------------------------------------------------------------------------------------------- TLS and serving
def server_certificate():
    """(key PEM, certificate PEM, certificate DER) of a fresh self-signed certificate for localhost, as go-plugin
    makes its own: the client trusts exactly the certificate it is handed in the handshake."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HashiCorp")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(seconds=30)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=True, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM), \
        certificate.public_bytes(serialization.Encoding.DER)


def stop_when_orphaned(parent, stop, interval=PARENT_POLL_S):
    """Set `stop` once the process that started the plugin is gone. A terraform that is killed (lint's timeouts
    kill only terraform) or crashes never calls Shutdown, and the plugin would otherwise serve forever. Polling the
    parent's id works everywhere; Linux's PR_SET_PDEATHSIG would fire when the Go thread that started us exits."""
    def watch():
        while not stop.wait(interval):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(schema_path, environ=os.environ, out=sys.stdout):
    """Run as a plugin until Terraform shuts it down or is gone; the handshake line goes to `out`."""
    import grpc

    if environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        print("This binary is a plugin. These are not meant to be executed directly. Run terraform (with "
              "terraform/lint.py's CLI configuration) and it will execute this plugin.", file=sys.stderr)
        return 1
    offered = environ.get("PLUGIN_PROTOCOL_VERSIONS", str(PLUGIN_PROTOCOL_VERSION)).split(",")
    if str(PLUGIN_PROTOCOL_VERSION) not in offered:
        print(f"terraform offers plugin protocol {','.join(offered)}; this provider speaks only "
              f"{PLUGIN_PROTOCOL_VERSION}", file=sys.stderr)
        return 1
    parent = os.getppid()
    pb = load_protocol()
    stop = threading.Event()
    stop_when_orphaned(parent, stop)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_send_message_length", 256 << 20)])
    server.add_generic_rpc_handlers(SchemaOnlyProvider(pb, load_schema(schema_path), stop).generic_handlers())
    client_certificate = environ.get("PLUGIN_CLIENT_CERT")
    handshake_certificate = ""
    if client_certificate:  # Terraform's automatic TLS: it trusts exactly the certificate of our handshake line
        key_pem, certificate_pem, certificate_der = server_certificate()
        # Terraform's own certificate cannot be required in return: it is ECDSA P-521, and the BoringSSL inside
        # grpcio does not offer P-521 signatures, so Terraform sends none. The port is on 127.0.0.1 only and the
        # provider holds nothing but a public schema.
        credentials = grpc.ssl_server_credentials([(key_pem, certificate_pem)], require_client_auth=False)
        port = server.add_secure_port("127.0.0.1:0", credentials)
        handshake_certificate = base64.b64encode(certificate_der).decode().rstrip("=")
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    fields = [str(CORE_PROTOCOL_VERSION), str(PLUGIN_PROTOCOL_VERSION), "tcp", f"127.0.0.1:{port}", "grpc"]
    print("|".join(fields + ([handshake_certificate] if handshake_certificate else [])), file=out, flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:  # Terraform interrupts its plugins along with itself; it is not an error
        pass
    server.stop(grace=1)
    return 0


# ---------------------------------------------------------------------------------------------- installing
def install(folder, platform, schema_path=SCHEMA_FILE, python=sys.executable):
    """Lay the provider out as a filesystem mirror under `folder` (registry.terraform.io/hashicorp/aws/<version>/
    <platform>/terraform-provider-aws_v<version>) and return the mirror's path and the version it offers."""
    folder = Path(folder)
    version = load_schema(schema_path)["provider_version"]
    package = folder / "mirror" / PROVIDER_ADDRESS / version / platform
    package.mkdir(parents=True, exist_ok=True)
    launcher = package / f"terraform-provider-aws_v{version}"
    command = [python, str(Path(__file__).resolve()), "--schema", str(Path(schema_path).resolve())]
    launcher.write_text(f"#!/bin/sh\nexec {shlex.join(command)}\n")
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder / "mirror", version


def cli_config(mirror):
    """A Terraform CLI configuration that installs hashicorp/aws from `mirror` and nothing from anywhere else."""
    return ("provider_installation {\n"
            "  filesystem_mirror {\n"
            f"    path    = {json.dumps(str(mirror))}\n"
            f"    include = [{json.dumps(PROVIDER_ADDRESS)}]\n"
            "  }\n"
            "}\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema", default=str(SCHEMA_FILE))
    args = parser.parse_args(argv)
    return serve(args.schema)


if __name__ == "__main__":
    sys.exit(main())
