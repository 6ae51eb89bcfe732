"""Without AWS credentials every AWS task stops at once, with one line that says how to configure them or to use
the local target, before touching Terraform, S3 or SageMaker."""

import time

import pytest
from invoke.exceptions import Exit

import aws.session
from aws import commands, data_sync, deployment, ec2_training, sagemaker_jobs
from local.ports import free_port
from aws_testlib import aws_credentials, make_context, moto_account  # noqa: F401 (fixtures)

ENTRY_POINTS = {
    "train --target sagemaker": lambda c: sagemaker_jobs.train(c, instances=2, spot=True),
    "tune": lambda c: sagemaker_jobs.tune(c),
    "ec2-train": lambda c: ec2_training.ec2_train(c),
    "plan": lambda c: deployment.plan(c, model_uri="s3://bucket/output/job/output/model.tar.gz"),
    "plan (approved version)": deployment.plan,
    "models --target aws": commands.models,
    "approve --target aws": lambda c: commands.approve(c, "1", reason="looks good"),
    "deploy --target aws": deployment.deploy,
    "status --target aws": deployment.status,
    "destroy --target aws": deployment.destroy,
    "predict --target aws": deployment.function_name,
    "data --upload": data_sync.upload,
}


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")     # this machine is no EC2 instance
    aws.session._session.cache_clear()
    yield
    aws.session._session.cache_clear()


@pytest.mark.parametrize("task", sorted(ENTRY_POINTS))
def test_every_aws_task_stops_at_once_with_how_to_configure_credentials(no_credentials, tmp_path, task):
    (tmp_path / "dogImages" / "train").mkdir(parents=True)
    c = make_context(tmp_path, terraform_dir=str(tmp_path / "no-terraform-touched"))
    c.config.data.dir = str(tmp_path / "dogImages")
    started = time.monotonic()
    with pytest.raises(Exit) as stopped:
        ENTRY_POINTS[task](c)
    assert stopped.value.message == (
        "no AWS credentials found: configure AWS credentials first (`aws configure`, `aws sso login`, AWS_PROFILE or "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or aws.profile in invoke.yaml), or use the local target: "
        "`invoke deploy --target local`")
    assert time.monotonic() - started < 5
    assert not (tmp_path / "plan").exists()


def test_an_unknown_profile_is_named_in_the_message(no_credentials, tmp_path):
    c = make_context(tmp_path, profile="no-such-profile")
    with pytest.raises(Exit, match=r"^The config profile \(no-such-profile\) could not be found: configure AWS "
                                   r"credentials first .* or use the local target"):
        deployment.status(c)


@pytest.fixture
def aws_unreachable(monkeypatch):
    """Credentials that would do, and every AWS endpoint on a loopback port nothing answers."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNREACHABLE00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unreachable")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: refused at once
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    aws.session._session.cache_clear()
    yield url
    aws.session._session.cache_clear()


@pytest.mark.parametrize("task", ["tune", "deploy --target aws", "data --upload"])
def test_an_unreachable_aws_is_reported_as_unreachable_not_as_refused_credentials(aws_unreachable, tmp_path, task):
    (tmp_path / "dogImages" / "train").mkdir(parents=True)
    c = make_context(tmp_path, terraform_dir=str(tmp_path / "no-terraform-touched"))
    c.config.data.dir = str(tmp_path / "dogImages")
    with pytest.raises(Exit) as stopped:
        ENTRY_POINTS[task](c)
    assert stopped.value.message == (
        f'cannot reach AWS to check the credentials (Could not connect to the endpoint URL: "{aws_unreachable}/"): '
        "check this machine's network connection and proxy (HTTPS_PROXY), aws.region, and AWS_ENDPOINT_URL if it is "
        "set, then run the task again")


def test_aws_unreachable_in_the_middle_of_a_task_stops_it_with_one_line(moto_account, tmp_path, monkeypatch):
    """STS and S3 answer (moto), then the SageMaker endpoint cannot be reached."""
    from aws_testlib import BUCKET, create_bucket, create_role

    create_bucket(objects=["data/dogImages/train/a/1.jpg"])
    c = make_context(tmp_path, bucket=BUCKET, sagemaker_role_arn=create_role())
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(Exit) as stopped:
        sagemaker_jobs.train(c)
    assert stopped.value.message.startswith(
        f'SageMaker training: cannot reach AWS (Could not connect to the endpoint URL: "{url}/"): check this '
        "machine's network connection")
