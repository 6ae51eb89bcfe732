"""The bucket and roles training needs before any model exists.

The first training job needs the bucket (data, code, output) and the SageMaker role, but the full deployment needs
a model. So the first AWS task applies only the storage, IAM and model registry modules (aws.bootstrap_targets: the
model package group must exist before the first job registers its model), with a placeholder
model URI the targeted modules never read, and later tasks read the outputs from the state. Setting
aws.sagemaker_role_arn (and aws.bucket) skips all of this.
"""

from invoke.exceptions import Exit

from aws.session import aws_settings
from aws.terraform import TerraformError
from aws.terraform_root import PLACEHOLDER_MODEL_URL, plan_dir, terraform_variables, workspace



def bootstrap_outputs(c, identity, needed=("sagemaker_role_arn", "bucket_name"), enable_ec2_training_host=False):
    """Terraform outputs with `needed` present, applying the bootstrap targets first when they are missing."""
    ws = workspace(c)
    try:
        outputs = ws.outputs()
        if all(outputs.get(name) for name in needed):
            return outputs
        targets = list(aws_settings(c).bootstrap_targets)
        print(f"first use of this account: creating {', '.join(targets)} with Terraform", flush=True)
        plan_file = plan_dir(c) / "bootstrap.tfplan"
        plan_file.parent.mkdir(parents=True, exist_ok=True)
        variables = terraform_variables(c, PLACEHOLDER_MODEL_URL, enable_ec2_training_host)
        ws.plan(plan_file, variables, targets=targets)
        ws.apply(plan_file)
        plan_file.unlink(missing_ok=True)
        outputs = ws.outputs()
    except TerraformError as error:
        raise Exit(str(error))
    missing = [name for name in needed if not outputs.get(name)]
    if missing:
        raise Exit(f"Terraform reports no {', '.join(missing)} after the bootstrap apply: "
                   "set aws.sagemaker_role_arn and aws.bucket in invoke.yaml instead")
    return outputs
