"""The function's settings as Terraform deploys them, read from the Terraform code itself (python-hcl2, no provider):
the local function runs with the same handler, runtime, timeout, memory, reserved concurrency and log level.

The handler is the lambda module's own default (the root does not set it); the others are the root's `function`
object defaults, which main.tf passes to the module.
"""

import functools
import re
from dataclasses import dataclass
from pathlib import Path

TERRAFORM_DIR = Path(__file__).resolve().parent.parent / "terraform"
_OPTIONAL_DEFAULT = re.compile(r"""'(\w+)': '\$\{optional\(\w+,\s*"?([^")]*)"?\)\}'""")


@dataclass(frozen=True)
class TerraformFunction:
    handler: str
    runtime: str
    timeout_s: int
    memory_mb: int
    reserved_concurrency: int
    log_level: str

    def environment(self, endpoint_name):
        """The variables the lambda module's environment block sets (ENDPOINT_NAME, LOG_LEVEL)."""
        return {"ENDPOINT_NAME": endpoint_name, "LOG_LEVEL": self.log_level}


def _variables(path):
    import hcl2   # imported here: only deploy and the function server need it

    with open(path) as handle:
        return {name: body for entry in hcl2.load(handle)["variable"] for name, body in entry.items()}


def _unwrapped(value):
    return value[0] if isinstance(value, list) and len(value) == 1 else value   # python-hcl2 8 wraps values


@functools.cache
def terraform_function(terraform_dir=TERRAFORM_DIR):
    module = _variables(Path(terraform_dir) / "modules" / "lambda" / "variables.tf")
    root_type = str(_unwrapped(_variables(Path(terraform_dir) / "variables.tf")["function"]["type"]))
    defaults = dict(_OPTIONAL_DEFAULT.findall(root_type))
    return TerraformFunction(handler=_unwrapped(module["handler"]["default"]), runtime=defaults["runtime"],
                             timeout_s=int(defaults["timeout"]), memory_mb=int(defaults["memory_size"]),
                             reserved_concurrency=int(defaults["reserved_concurrency"]),
                             log_level=defaults["log_level"])
