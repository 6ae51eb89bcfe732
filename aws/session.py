"""Where the AWS tasks get their settings and their one boto3 session.

Settings come from task flags, else the `aws:` and `ec2:` sections (invoke.yaml, INVOKE_* variables), else the
defaults of configuration/areas.py (docs/configuration.md). Every AWS task calls `require_credentials` first, so a
machine with no credentials stops at once with one line instead of a stack trace from deep inside botocore.
"""

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.exceptions
from invoke.exceptions import Exit

from configuration.areas import AwsSettings, Ec2Settings, load

REPO_ROOT = Path(__file__).resolve().parent.parent

NO_CREDENTIALS_HELP = (
    "configure AWS credentials first (`aws configure`, `aws sso login`, AWS_PROFILE or AWS_ACCESS_KEY_ID/"
    "AWS_SECRET_ACCESS_KEY, or aws.profile in invoke.yaml), or use the local target: `invoke deploy --target local`"
)
UNREACHABLE_HELP = ("check this machine's network connection and proxy (HTTPS_PROXY), aws.region, and AWS_ENDPOINT_URL "
                    "if it is set, then run the task again")
# botocore's errors for a request that never got an answer (no route, DNS, proxy, TLS, timeouts, dropped connection).
UNREACHABLE = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)
# What to do, by the error code AWS answers with; anything else: the default.
WHAT_TO_DO = {
    "ResourceInUse": "a resource of that name exists already: run the task again (it picks a new name)",
    "ResourceLimitExceeded": "the account's quota is used up: wait for running jobs or ask AWS for a higher quota",
    "ThrottlingException": "AWS is throttling this account: wait a minute and run the task again",
    "AccessDenied": "your credentials lack this permission: ask your administrator or use other credentials",
    "AccessDeniedException": "your credentials lack this permission: ask your administrator or use other credentials",
    "ExpiredToken": f"the credentials have expired: {NO_CREDENTIALS_HELP}",
    "ExpiredTokenException": f"the credentials have expired: {NO_CREDENTIALS_HELP}",
}
DEFAULT_WHAT_TO_DO = "fix what AWS names and run the task again"


def aws_settings(c):
    """The aws section, typed (configuration/areas.py: defaults, INVOKE_* forms, paths under the repository)."""
    return load(c, AwsSettings)


def ec2_settings(c):
    """The ec2 section: the EC2 training host of `invoke ec2-train`."""
    return load(c, Ec2Settings)


@functools.lru_cache(maxsize=None)
def _session(profile, region):
    return boto3.Session(profile_name=profile or None, region_name=region or None)


def boto_session(c):
    """The boto3 session of this project's profile and region (one per profile and region, so clients share it)."""
    try:
        return _session(aws_settings(c).profile, aws_settings(c).region)
    except botocore.exceptions.ProfileNotFound as error:
        raise Exit(f"{error}: {NO_CREDENTIALS_HELP}")


@dataclass(frozen=True)
class Identity:
    account: str
    arn: str
    region: str


def require_credentials(c):
    """Stop with one line unless credentials are configured and AWS accepts them; returns who we are."""
    session = boto_session(c)
    if not session.region_name:
        raise Exit("no AWS region: set aws.region in invoke.yaml or INVOKE_AWS_REGION")
    try:
        credentials = session.get_credentials()
    except botocore.exceptions.BotoCoreError as error:  # an expired SSO token, a broken credential_process...
        raise Exit(f"AWS credentials could not be loaded ({error}): {NO_CREDENTIALS_HELP}")
    if credentials is None:
        raise Exit(f"no AWS credentials found: {NO_CREDENTIALS_HELP}")
    try:
        caller = session.client("sts").get_caller_identity()
    except UNREACHABLE as error:
        raise Exit(f"cannot reach AWS to check the credentials ({error}): {UNREACHABLE_HELP}")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        raise Exit(f"AWS did not accept the credentials ({error}): {NO_CREDENTIALS_HELP}")
    return Identity(account=caller["Account"], arn=caller["Arn"], region=session.region_name)


def bucket_name(c, identity):
    """aws.bucket, else the bucket Terraform creates: <name_prefix>-<account id>."""
    return aws_settings(c).bucket or f"{aws_settings(c).name_prefix}-{identity.account}"


# Key prefixes of the project bucket; the Terraform roles grant access by them (terraform variable s3_prefixes, which
# aws.terraform_variables.s3_prefixes overrides for both).
DEFAULT_S3_PREFIXES = {"data": "data/", "models": "models/", "checkpoints": "checkpoints/", "output": "output/",
                       "code": "code/"}


def s3_prefix(c, name):
    overrides = (aws_settings(c).terraform_variables or {}).get("s3_prefixes", {}) or {}
    return overrides.get(name) or DEFAULT_S3_PREFIXES[name]


def s3_uri(c, identity, name, *parts):
    """s3://<bucket>/<prefix of `name`>/<parts...>"""
    return f"s3://{bucket_name(c, identity)}/{s3_prefix(c, name)}" + "/".join(parts)


def split_s3_uri(uri):
    """(bucket, key) of s3://bucket/key."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def client(c, service):
    return boto_session(c).client(service)


def poll_until(read_status, *, label, done, timeout_s, poll_s, timeout_message):
    """Call `read_status()` every `poll_s` seconds, printing each new status as `<label>: <status> (<n> s)`, until
    `done(status)` is true (the last read_status() answer is returned) or `timeout_s` passes (Exit with
    `timeout_message(status)`). read_status returns (status, answer); it raises Exit itself on a failed state."""
    started, last = time.monotonic(), None
    while True:
        status, answer = read_status()
        if status != last:
            print(f"{label}: {status} ({time.monotonic() - started:.0f} s)", flush=True)
            last = status
        if done(status):
            return answer
        if time.monotonic() - started > timeout_s:
            raise Exit(timeout_message(status))
        time.sleep(poll_s)


def aws_error_line(error):
    """One line for an error from AWS or from the way there: what happened, then what to do."""
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        return f"AWS refused {error.operation_name} ({code}: {message}): {WHAT_TO_DO.get(code, DEFAULT_WHAT_TO_DO)}"
    if isinstance(error, UNREACHABLE):
        return f"cannot reach AWS ({error}): {UNREACHABLE_HELP}"
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return f"{error}: {NO_CREDENTIALS_HELP}"
    return f"{error}: {DEFAULT_WHAT_TO_DO}"


@contextlib.contextmanager
def one_line_errors(doing):
    """Turn an error from AWS, boto3's S3 transfers or the network into Exit: `<doing>: <aws_error_line>`."""
    import boto3.exceptions

    try:
        yield
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, boto3.exceptions.Boto3Error) as error:
        raise Exit(f"{doing}: {' '.join(aws_error_line(error).split())}") from None


def stops_with_one_line(doing):
    """Decorator form of one_line_errors for a task's entry point."""
    def wrap(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with one_line_errors(doing):
                return function(*args, **kwargs)
        return wrapper
    return wrap
