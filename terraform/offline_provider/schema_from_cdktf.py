"""Regenerates aws-schema.json, the hashicorp/aws schema the offline provider serves, from @cdktf/provider-aws.

The npm package @cdktf/provider-aws (CDKTF_PACKAGE below) is generated from the hashicorp/aws provider and carries
every resource's and data source's schema: its .jsii file holds each argument's and block's type and whether it is
required; its generated JavaScript (lib/<type>/index.js) holds the Terraform names, whether a nested thing is a block
and whether it is a list, a set or a single object, and which attributes are computed only. The file this writes
keeps the provider's own configuration and only the resource and data source types that the project's *.tf files
use (--types adds more), so it stays small; run this again after adding a type:

    python terraform/offline_provider/schema_from_cdktf.py            # fetches the package with `npm pack`
    python terraform/offline_provider/schema_from_cdktf.py --package DIR   # an unpacked package (with .jsii, lib/)
    python terraform/offline_provider/schema_from_cdktf.py --fetch-into .cache/cdktf-provider-aws   # fetch only

Whether an optional argument is also computed comes from the TypeScript the JavaScript was compiled from (kept in
its source map). What the package does not record, and so the schema does not either: descriptions, sensitivity,
deprecations and provider-side validation (value ranges, conflicting arguments). Terraform itself still checks every name, type, required argument and block count.
"""

import argparse
import base64
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TERRAFORM_DIR = HERE.parent
SCHEMA_FILE = HERE / "aws-schema.json"
CDKTF_PACKAGE = "@cdktf/provider-aws@21.22.1"
ASSEMBLY = "@cdktf/provider-aws"
# Settable everywhere in hashicorp/aws, and filled in by the provider when left out.
OPTIONAL_AND_COMPUTED = {"id", "tags_all"}
_TYPE_LINK = re.compile(r"docs/(resources|data-sources)/(\w+)")
_USED_TYPE = re.compile(r'^\s*(resource|data)\s+"(aws_\w+)"', re.MULTILINE)
_HCL_ENTRY = re.compile(r'(\w+): \{\s*value: ([^\n]*)\n\s*isBlock: (true|false),\s*type: "(\w+)",\s*'
                        r'storageClassType: "(\w+)"')
_GETTER = re.compile(r"get (\w+)\(\) \{\s*return (cdktf\.Fn\.tolist\()?this\.get(\w+)Attribute\('([^']+)'\)")
_COMPLEX_FIELD = re.compile(r'this\._(\w+) = new (?:cdktf\.)?(\w+)\(this, "([^"]+)"(?:, (true|false))?\)')
_FLAGS = re.compile(r"// (\w+) - computed: (true|false), optional: (true|false), required: (true|false)")
_SOURCE_MAP = "\n//# sourceMappingURL=data:application/json;base64,"


class SchemaError(Exception):
    pass


def used_types(directory=TERRAFORM_DIR):
    """{"resources": [...], "data_sources": [...]}: the aws_* types the *.tf files under `directory` declare."""
    found = {"resource": set(), "data": set()}
    for path in Path(directory).rglob("*.tf"):
        if ".terraform" in path.parts:
            continue
        for kind, name in _USED_TYPE.findall(path.read_text()):
            found[kind].add(name)
    return {"resources": sorted(found["resource"]), "data_sources": sorted(found["data"])}


class _JsModule:
    """What the generated index.js of one resource says that the .jsii does not."""

    def __init__(self, text):
        text, _, source_map = text.partition(_SOURCE_MAP)
        # The TypeScript it was compiled from (in its source map) states computed/optional/required for every
        # attribute; the JavaScript keeps that comment only for computed-only ones.
        self.flags = {}  # class name -> {snake: computed}
        for source in json.loads(base64.b64decode(source_map)).get("sourcesContent", []) if source_map else []:
            for name, body in self._chunks(source, r"^export class (\w+) extends"):
                self.flags[name] = {snake: computed == "true" for snake, computed, _, _ in _FLAGS.findall(body)}
        self.hcl = {}  # struct function or class name -> {snake: (camel, is_block, kind, storage)}
        self.getters = {}  # class name -> {camel: (snake, getter kind, wrapped in tolist)}
        self.complex = {}  # class name -> {camel: (class, snake, wraps_set)}
        for name, body in self._chunks(text):
            entries = {}
            for snake, value, is_block, kind, storage in _HCL_ENTRY.findall(body):
                camel = re.search(r"(?:struct\.|this\._)(\w+)", value)
                entries[snake] = (camel.group(1) if camel else None, is_block == "true", kind, storage)
            if entries:
                self.hcl[name] = entries
            self.getters[name] = {camel: (snake, kind, bool(tolist)) for camel, tolist, kind, snake
                                  in _GETTER.findall(body)}
            self.complex[name] = {camel: (cls, snake, wraps == "true") for camel, cls, snake, wraps
                                  in _COMPLEX_FIELD.findall(body)}

    @staticmethod
    def _chunks(text, start=r"^(?:function (\w+)ToHclTerraform\(struct\)|class (\w+) extends)"):
        starts = [(m.start(), next(group for group in m.groups() if group))
                  for m in re.finditer(start, text, re.MULTILINE)]
        for index, (start, name) in enumerate(starts):
            end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
            yield name[0].upper() + name[1:], text[start:end]


class Converter:
    def __init__(self, package_dir):
        self.package_dir = Path(package_dir)
        jsii_file = self.package_dir / ".jsii"
        if not jsii_file.exists():
            raise SchemaError(f"{jsii_file} does not exist: not an unpacked {ASSEMBLY} package")
        assembly = json.loads(jsii_file.read_text())
        self.version = assembly["version"]
        self.provider_version = self._provider_version(assembly)
        self.types = assembly["types"]
        self.by_terraform_name = {}
        for fqn, jsii_type in self.types.items():
            base = jsii_type.get("base")
            if base not in ("cdktf.TerraformResource", "cdktf.TerraformDataSource"):
                continue
            link = _TYPE_LINK.search(jsii_type.get("docs", {}).get("summary", ""))
            if link:
                kind = "resources" if base == "cdktf.TerraformResource" else "data_sources"
                self.by_terraform_name[(kind, "aws_" + link.group(2))] = fqn
        self._js = {}

    @staticmethod
    def _provider_version(assembly):
        """The hashicorp/aws version the package was generated from: the one its registry links name."""
        provider = assembly["types"][f"{ASSEMBLY}.provider.AwsProvider"]
        link = re.search(r"providers/hashicorp/aws/(\d+\.\d+\.\d+)/", provider["docs"]["summary"])
        if not link:
            raise SchemaError("the package does not say which hashicorp/aws version it was generated from")
        return link.group(1)

    def js(self, fqn):
        filename = self.types[fqn]["locationInModule"]["filename"]
        module = Path(filename).parent.name
        if module not in self._js:
            path = self.package_dir / "lib" / module / "index.js"
            self._js[module] = _JsModule(path.read_text())
        return self._js[module]

    # ------------------------------------------------------------------ types
    def _cty(self, jsii_type, js_kind=None, tolist=False):
        """cty type (Terraform's JSON form) of a jsii type reference."""
        if "union" in jsii_type:
            members = [t for t in jsii_type["union"]["types"] if t.get("fqn") != "cdktf.IResolvable"]
            return self._cty(members[0], js_kind, tolist) if members else "dynamic"
        if "primitive" in jsii_type:
            return {"string": "string", "number": "number", "boolean": "bool"}.get(jsii_type["primitive"], "dynamic")
        if "collection" in jsii_type:
            collection = jsii_type["collection"]
            element = self._cty(collection["elementtype"])
            if collection["kind"] == "map":
                return ["map", element]
            return ["set" if js_kind == "set" or tolist else "list", element]
        fqn = jsii_type["fqn"]
        simple = {"cdktf.StringMap": ["map", "string"], "cdktf.NumberMap": ["map", "number"],
                  "cdktf.BooleanMap": ["map", "bool"], "cdktf.AnyMap": ["map", "dynamic"],
                  "cdktf.StringMapList": ["list", ["map", "string"]], "cdktf.NumberMapList": ["list", ["map", "number"]],
                  "cdktf.BooleanMapList": ["list", ["map", "bool"]], "cdktf.AnyMapList": ["list", ["map", "dynamic"]],
                  "cdktf.StringListList": ["list", ["list", "string"]], "cdktf.NumberListList": ["list", ["list", "number"]],
                  "cdktf.IResolvable": "dynamic"}
        if fqn in simple:
            return simple[fqn]
        if self.types[fqn].get("datatype"):  # a struct used as an attribute (not a block)
            return ["object", {name: attr["type"] for name, attr in self._struct(fqn)["attributes"].items()}]
        raise SchemaError(f"no cty type for {fqn}")

    def _computed_object_type(self, class_fqn):
        """cty object type of a computed nested value (an OutputReference class without inputs)."""
        attributes, _ = self._computed_members(class_fqn, set())
        return ["object", {name: attr["type"] for name, attr in attributes.items()}]

    def _computed_members(self, class_fqn, settable_camel):
        """Attributes that only the provider sets, from the getters of a resource or OutputReference class."""
        jsii_class = self.types[class_fqn]
        name = jsii_class["name"]
        js = self.js(class_fqn)
        getters, complex_fields = js.getters.get(name, {}), js.complex.get(name, {})
        properties = {p["name"]: p for p in jsii_class.get("properties", []) if not p.get("static")}
        attributes, unresolved = {}, []
        for camel, prop in properties.items():
            if camel in settable_camel or camel.endswith("Input") or camel == "internalValue":
                continue
            if f"{camel}Input" in properties or not prop.get("immutable"):
                continue
            if camel in getters:
                snake, getter_kind, tolist = getters[camel]
                cty = self._cty(prop["type"], tolist=tolist)
                if getter_kind == "Any":
                    cty = "dynamic"
            elif camel in complex_fields:
                cls, snake, wraps_set = complex_fields[camel]
                fqn = f"{ASSEMBLY}.{jsii_class['namespace']}.{cls}"
                if cls.endswith("List"):
                    element = f"{fqn[:-len('List')]}OutputReference"
                    cty = ["set" if wraps_set else "list", self._computed_object_type(element)]
                elif fqn in self.types:
                    cty = self._computed_object_type(fqn)
                else:
                    cty = {"StringMap": ["map", "string"], "NumberMap": ["map", "number"],
                           "BooleanMap": ["map", "bool"]}.get(cls, "dynamic")
            else:
                unresolved.append(camel)
                continue
            attributes[snake] = {"type": cty, "computed": True}
        return attributes, unresolved

    def _block(self, fqn, settable_props, hcl_entries, output_class_fqn):
        """A schema block: attributes and nested blocks of one struct (or of a resource's config)."""
        block = {"attributes": {}, "block_types": {}}
        by_camel = {camel: (snake, is_block, kind, storage) for snake, (camel, is_block, kind, storage)
                    in hcl_entries.items()}
        output_class = self.types.get(output_class_fqn, {}).get("name") if output_class_fqn else None
        computed_flags = self.js(fqn).flags.get(output_class, {}) if output_class else {}
        for prop in settable_props:
            camel = prop["name"]
            docs = " ".join(prop.get("docs", {}).get(key, "") for key in ("summary", "remarks"))
            anchor = re.search(r"#(\w+) ", docs)
            if camel in by_camel:
                snake, is_block, kind, _ = by_camel[camel]
            elif anchor and anchor.group(1) in hcl_entries:  # renamed in the generated code (get_password_data)
                snake = anchor.group(1)
                _, is_block, kind, _ = hcl_entries[snake]
            else:
                raise SchemaError(f"{fqn}.{camel}: no Terraform name in the generated code")
            required = not prop.get("optional")
            if is_block:
                element = prop["type"]
                if "union" in element:
                    element = [t for t in element["union"]["types"] if t.get("fqn") != "cdktf.IResolvable"][0]
                single_struct = "fqn" in element
                struct_fqn = element["fqn"] if single_struct else element["collection"]["elementtype"]["fqn"]
                nested = self._struct(struct_fqn)
                if kind == "struct":
                    nesting = {"nesting": "single"}
                else:
                    nesting = {"nesting": kind}
                    if single_struct:
                        nesting["max_items"] = 1
                    if required:
                        nesting["min_items"] = 1
                if kind == "struct" and required:
                    nesting["min_items"] = 1
                block["block_types"][snake] = dict(nesting, block=nested)
            else:
                attribute = {"type": self._cty(prop["type"], js_kind=kind)}
                if required:
                    attribute["required"] = True
                else:
                    attribute["optional"] = True
                    if computed_flags.get(snake) or snake in OPTIONAL_AND_COMPUTED:
                        attribute["computed"] = True
                block["attributes"][snake] = attribute
        if output_class_fqn in self.types:
            computed, unresolved = self._computed_members(output_class_fqn, {p["name"] for p in settable_props})
            for snake, attribute in computed.items():
                if snake not in block["attributes"] and snake not in block["block_types"]:
                    block["attributes"][snake] = attribute
            if unresolved:
                raise SchemaError(f"{output_class_fqn}: computed attributes without a Terraform name: {unresolved}")
        return block

    def _struct(self, struct_fqn):
        struct = self.types[struct_fqn]
        js = self.js(struct_fqn)
        entries = js.hcl.get(struct["name"], {})
        return self._block(struct_fqn, struct.get("properties", []), entries, f"{struct_fqn}OutputReference")

    def type_schema(self, kind, name):
        fqn = self.by_terraform_name.get((kind, name))
        if fqn is None:
            raise SchemaError(f"{name}: no such {kind[:-1].replace('_', ' ')} in {ASSEMBLY} {self.version}")
        config = self.types[f"{fqn}Config"]
        entries = self.js(fqn).hcl.get(self.types[fqn]["name"], {})
        return self._block(fqn, config.get("properties", []), entries, fqn)

    def provider_schema(self):
        fqn = f"{ASSEMBLY}.provider.AwsProvider"
        config = self.types[f"{fqn}Config"]
        entries = self.js(fqn).hcl.get(self.types[fqn]["name"], {})
        props = [p for p in config.get("properties", []) if p["name"] != "alias"]
        return self._block(fqn, props, entries, None)

    def schema(self, types):
        return {
            "generated_from": f"{ASSEMBLY}@{self.version}",
            "provider_version": self.provider_version,
            "provider": self.provider_schema(),
            "resources": {name: self.type_schema("resources", name) for name in sorted(types["resources"])},
            "data_sources": {name: self.type_schema("data_sources", name) for name in sorted(types["data_sources"])},
        }


def render(schema):
    """The committed form: one type per line, so a regenerated file diffs by type."""
    lines = ["{"]
    head = {key: schema[key] for key in ("generated_from", "provider_version")}
    for key, value in head.items():
        lines.append(f"{json.dumps(key)}: {json.dumps(value)},")
    lines.append(f'"provider": {json.dumps(schema["provider"], sort_keys=True, separators=(",", ":"))},')
    for section in ("resources", "data_sources"):
        lines.append(f'{json.dumps(section)}: {{')
        items = list(schema[section].items())
        for index, (name, block) in enumerate(items):
            comma = "," if index + 1 < len(items) else ""
            lines.append(f'{json.dumps(name)}: {json.dumps(block, sort_keys=True, separators=(",", ":"))}{comma}')
        lines.append("}," if section == "resources" else "}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def fetch_package(into):
    """`npm pack` the package into `into` and unpack what the conversion reads; returns the package folder."""
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    try:
        packed = subprocess.run(["npm", "pack", CDKTF_PACKAGE, "--silent"], cwd=into, capture_output=True,
                                text=True, timeout=600, check=False)
    except FileNotFoundError:
        raise SchemaError("npm is not installed: it fetches " + CDKTF_PACKAGE)
    if packed.returncode != 0:
        raise SchemaError(f"npm pack {CDKTF_PACKAGE} failed: {(packed.stderr or packed.stdout).strip()[-300:]}")
    tarball = into / packed.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as archive:
        archive.extractall(into, filter="data")
    tarball.unlink()
    return into / "package"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", help="an unpacked @cdktf/provider-aws (default: fetch it with npm pack)")
    parser.add_argument("--types", nargs="*", default=[], help="more types to include: aws_x (resource) or data.aws_x")
    parser.add_argument("--output", default=str(SCHEMA_FILE), help=f"where to write (default: {SCHEMA_FILE})")
    parser.add_argument("--fetch-into", metavar="DIR", help="only fetch and unpack the package into DIR/package "
                        "(what .ci/setup does for the test that checks the committed schema)")
    args = parser.parse_args(argv)
    if args.fetch_into:
        try:
            print(f"{CDKTF_PACKAGE} unpacked in {fetch_package(args.fetch_into)}")
            return 0
        except SchemaError as error:
            print(f"schema_from_cdktf: {error}", file=sys.stderr)
            return 1
    types = used_types()
    for extra in args.types:
        kind, name = ("data_sources", extra[5:]) if extra.startswith("data.") else ("resources", extra)
        types[kind] = sorted(set(types[kind]) | {name})
    try:
        if args.package:
            schema = Converter(args.package).schema(types)
        else:
            with tempfile.TemporaryDirectory(prefix="cdktf-aws-") as folder:
                schema = Converter(fetch_package(folder)).schema(types)
    except SchemaError as error:
        print(f"schema_from_cdktf: {error}", file=sys.stderr)
        return 1
    Path(args.output).write_text(render(schema))
    print(f"{args.output}: hashicorp/aws {schema['provider_version']} from {schema['generated_from']}, "
          f"{len(schema['resources'])} resource and {len(schema['data_sources'])} data source types")
    return 0


if __name__ == "__main__":
    sys.exit(main())
