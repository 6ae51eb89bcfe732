"""The check every AWS test runs under (tests/botocore_model_check.py): a request that breaks botocore's service
model of its operation is found, whichever client sent it, and the rules botocore itself leaves to AWS are applied."""

import boto3
import botocore.session
import pytest

from botocore_model_check import violations
from aws_testlib import REGION, aws_credentials, moto_account  # noqa: F401 (fixtures)

SAGEMAKER = botocore.session.get_session().get_service_model("sagemaker")
SSM = botocore.session.get_session().get_service_model("ssm")


def tuning_request(**config):
    return {"HyperParameterTuningJobName": "dog-breeds-tune-1",
            "HyperParameterTuningJobConfig": {"Strategy": "Bayesian",
                                              "ResourceLimits": {"MaxNumberOfTrainingJobs": 2,
                                                                 "MaxParallelTrainingJobs": 1}, **config}}


def problems_of(service, operation, params):
    return violations(service.operation_model(operation).input_shape, params, operation)


def test_a_conforming_request_has_no_violations():
    assert problems_of(SAGEMAKER, "CreateHyperParameterTuningJob", tuning_request()) == []


@pytest.mark.parametrize("change, problem", [
    ({"HyperParameterTuningJobName": "dog-breeds-tune-20261201-213000-abcd"},
     "HyperParameterTuningJobName: length 36 is above the maximum 32"),
    ({"HyperParameterTuningJobName": "dog_breeds"},
     "HyperParameterTuningJobName: 'dog_breeds' does not match the pattern"),
    ({"HyperParameterTuningJobConfig": {"Strategy": "Exhaustive", "ResourceLimits": {"MaxParallelTrainingJobs": 1}}},
     "HyperParameterTuningJobConfig.Strategy: 'Exhaustive' is not one of Bayesian, Random, Hyperband, Grid"),
    ({"HyperParameterTuningJobConfig": {"Strategy": "Random", "ResourceLimits": {"MaxParallelTrainingJobs": 0}}},
     "HyperParameterTuningJobConfig.ResourceLimits.MaxParallelTrainingJobs: value 0 is below the minimum 1"),
    ({"HyperParameterTuningJobConfig": {"Strategy": "Random", "ResourceLimits": {"MaxParallelTrainingJobs": 1},
                                        "ParameterRanges": {"CategoricalParameterRanges": [
                                            {"Name": "batch_size", "Values": [str(n) for n in range(31)]}]}}},
     "ParameterRanges.CategoricalParameterRanges[0].Values: length 31 is above the maximum 30"),
])
def test_what_botocore_leaves_to_aws_is_found(change, problem):
    found = problems_of(SAGEMAKER, "CreateHyperParameterTuningJob", {**tuning_request(), **change})
    assert any(problem in line for line in found), found


def test_sizes_ranges_required_members_and_patterns_are_found():
    found = problems_of(SSM, "SendCommand", {"DocumentName": "AWS-RunShellScript",
                                             "InstanceIds": ["i-0123456789abcdef0"] * 51, "TimeoutSeconds": 10,
                                             "Comment": "x" * 101, "Parameters": {"commands": []},
                                             "CloudWatchOutputConfig": {"CloudWatchLogGroupName": ""}})
    assert sorted(found) == [
        "SendCommand.CloudWatchOutputConfig.CloudWatchLogGroupName: length 0 is below the minimum 1",
        "SendCommand.Comment: length 101 is above the maximum 100",
        "SendCommand.InstanceIds: length 51 is above the maximum 50",
        "SendCommand.TimeoutSeconds: value 10 is below the minimum 30"]
    assert problems_of(SSM, "SendCommand", {"InstanceIds": ["i-1"]}) == [
        "SendCommand.DocumentName: required member is missing",
        "SendCommand.InstanceIds[0]: 'i-1' does not match the pattern (^i-(\\w{8}|\\w{17})$)|(^mi-\\w{17}$)"]


def test_a_request_from_any_client_created_in_the_test_is_checked(moto_account, aws_requests_match_the_service_model):
    """A client of a session the test never handed to anything (as the SageMaker SDK makes its own) is covered."""
    sagemaker = boto3.Session(region_name=REGION).client("sagemaker")
    with pytest.raises(sagemaker.exceptions.ClientError):
        sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="x" * 33)
    found = aws_requests_match_the_service_model.found
    assert found[0] == ("sagemaker DescribeHyperParameterTuningJob.HyperParameterTuningJobName: length 33 is above "
                        "the maximum 32")
    found.clear()   # seen: this test's violation was the point
