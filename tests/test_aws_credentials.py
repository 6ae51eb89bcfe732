"""Without AWS credentials every AWS task stops at once, with one line that says how to configure them or to use
the local target, before touching Terraform, S3 or SageMaker."""

import time

import pytest
from invoke.exceptions import Exit

import aws.session
from aws import data_sync, deployment, ec2_training, sagemaker_jobs
from test_aws_support import make_context

ENTRY_POINTS = {
    "train --target sagemaker": lambda c: sagemaker_jobs.train(c, instances=2, spot=True),
    "tune": lambda c: sagemaker_jobs.tune(c),
    "ec2-train": lambda c: ec2_training.ec2_train(c),
    "plan": lambda c: deployment.plan(c, model_uri="s3://bucket/output/job/output/model.tar.gz"),
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
    assert not (tmp_path / "plan").exists() and not (tmp_path / "model_uri.json").exists()


def test_an_unknown_profile_is_named_in_the_message(no_credentials, tmp_path):
    c = make_context(tmp_path, profile="no-such-profile")
    with pytest.raises(Exit, match=r"^The config profile \(no-such-profile\) could not be found: configure AWS "
                                   r"credentials first .* or use the local target"):
        deployment.status(c)
