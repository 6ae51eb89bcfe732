"""Settings are declared once (configuration/areas.py), read typed through invoke's own configuration loading, take
every documented INVOKE_* form, refuse bad values with one line, and docs/configuration.md lists them as declared."""

import dataclasses
from pathlib import Path

import pytest
from invoke import Config

from configuration import reference
from training import hyperparameters
from configuration.areas import (AREAS, REPO_ROOT, AwsSettings, DataSettings, LocalSettings, ProjectSettings,
                                 TrainSettings, TuningSettings, default_of, env_name, invoke_defaults, load)
from configuration.values import SettingError


def invoke_config(project_dir=REPO_ROOT):
    """The configuration as invoke builds it for a task: the collection's defaults, the project's invoke.yaml,
    then the shell environment (invoke's Executor does the same, in the same order of precedence)."""
    config = Config(project_location=str(project_dir))
    config.load_project()
    config.load_collection(invoke_defaults())
    config.load_shell_env()
    return config


@pytest.fixture
def project(tmp_path):
    """A project folder whose invoke.yaml a test writes."""
    def write(text):
        (tmp_path / "invoke.yaml").write_text(text)
        return tmp_path
    return write


def test_without_overrides_every_area_holds_its_declared_defaults_with_paths_under_the_repository():
    config = invoke_config()
    for area in AREAS:
        loaded = load(config, area)
        for spec in dataclasses.fields(area):
            default = default_of(spec)
            expected = REPO_ROOT / default if isinstance(getattr(loaded, spec.name), Path) else default
            assert getattr(loaded, spec.name) == expected, spec.name
    assert load(config, TrainSettings).model_dir == REPO_ROOT / "build" / "model"


def test_invoke_is_given_every_default_as_text_that_parses_back_to_it():
    tree = invoke_defaults()
    for area in AREAS:
        section = tree
        for key in area.SECTION:
            section = section[key]
        given = {spec.name: section[spec.name] for spec in dataclasses.fields(area)}
        assert all(isinstance(value, str) or value == {} for value in given.values()), area
        nested = given
        for key in reversed(area.SECTION):
            nested = {key: nested}
        assert load(nested, area) == load({}, area)


@pytest.mark.parametrize("text, expected", [("true", True), ("false", False), ("YES", True), ("no", False),
                                            ("1", True), ("0", False), (" False ", False)])
def test_a_boolean_variable_means_what_it_says(monkeypatch, text, expected):
    monkeypatch.setenv("INVOKE_AWS_SDK_ROLE_VALIDATION", text)
    assert load(invoke_config(), AwsSettings).sdk_role_validation is expected


def test_a_boolean_variable_overrides_a_yaml_boolean_of_invoke_yaml_by_its_own_text(monkeypatch, project):
    folder = project("aws:\n  sdk_role_validation: true\n")
    assert load(invoke_config(folder), AwsSettings).sdk_role_validation is True
    monkeypatch.setenv("INVOKE_AWS_SDK_ROLE_VALIDATION", "false")    # invoke's own cast would make this True
    assert load(invoke_config(folder), AwsSettings).sdk_role_validation is False


@pytest.mark.parametrize("variable, text, area, name, expected", [
    ("INVOKE_LOCAL_ENDPOINT_PORT", "18080", LocalSettings, "endpoint_port", 18080),
    ("INVOKE_LOCAL_IMAGE_FETCH_TIMEOUT_S", "2.5", LocalSettings, "image_fetch_timeout_s", 2.5),
    ("INVOKE_TRAIN_MODEL_DIR", "elsewhere/model", TrainSettings, "model_dir", REPO_ROOT / "elsewhere/model"),
    ("INVOKE_TRAIN_MODEL_DIR", "/abs/model", TrainSettings, "model_dir", Path("/abs/model")),
    ("INVOKE_AWS_BOOTSTRAP_TARGETS", "module.storage,module.iam", AwsSettings, "bootstrap_targets",
     ("module.storage", "module.iam")),
    ("INVOKE_AWS_BOOTSTRAP_TARGETS", '["module.storage"]', AwsSettings, "bootstrap_targets", ("module.storage",)),
    ("INVOKE_TUNING_LEARNING_RATE", "[1e-5, 0.5]", TuningSettings, "learning_rate", (1e-5, 0.5)),
    ("INVOKE_TUNING_EPOCHS", "[]", TuningSettings, "epochs", ()),
    ("INVOKE_TRAIN_HYPERPARAMETERS", "{epochs: 20, arch: resnet18}", TrainSettings, "hyperparameters",
     {"epochs": 20, "arch": "resnet18"}),
    ("INVOKE_TRAIN_HYPERPARAMETERS", '{"lr": 0.01}', TrainSettings, "hyperparameters", {"lr": 0.01}),
    ("INVOKE_LOCAL_ENDPOINT_ENVIRONMENT", "{OMP_NUM_THREADS: '2'}", LocalSettings, "endpoint_environment",
     {"OMP_NUM_THREADS": "2"}),
    ("INVOKE_AWS_TERRAFORM_VARIABLES", "", AwsSettings, "terraform_variables", {}),
    ("INVOKE_TARGET", "aws", ProjectSettings, "target", "aws"),
])
def test_every_documented_variable_form_reaches_the_typed_setting(monkeypatch, variable, text, area, name,
                                                                    expected):
    monkeypatch.setenv(variable, text)
    assert getattr(load(invoke_config(), area), name) == expected


def test_a_variable_replaces_a_yaml_mapping_of_invoke_yaml(monkeypatch, project):
    folder = project("train:\n  hyperparameters: {epochs: 5}\n")
    assert load(invoke_config(folder), TrainSettings).hyperparameters == {"epochs": 5}
    monkeypatch.setenv("INVOKE_TRAIN_HYPERPARAMETERS", "{epochs: 7, mode: head}")
    assert load(invoke_config(folder), TrainSettings).hyperparameters == {"epochs": 7, "mode": "head"}


@pytest.mark.parametrize("variable, text, message", [
    ("INVOKE_AWS_SDK_ROLE_VALIDATION", "off",
     "aws.sdk_role_validation (INVOKE_AWS_SDK_ROLE_VALIDATION): 'off' is not a boolean: write true or false "
     "(or yes/no, 1/0)"),
    ("INVOKE_LOCAL_ENDPOINT_PORT", "80a", "local.endpoint_port (INVOKE_LOCAL_ENDPOINT_PORT): '80a' is not a whole "
                                          "number"),
    ("INVOKE_LOCAL_ENDPOINT_WORKERS", "0", "local.endpoint_workers (INVOKE_LOCAL_ENDPOINT_WORKERS): 0 is below 1"),
    ("INVOKE_LOCAL_ENDPOINT_RUNTIME", "docker", "local.endpoint_runtime (INVOKE_LOCAL_ENDPOINT_RUNTIME): 'docker' "
                                                "is not one of toolkit, builtin, auto"),
    ("INVOKE_TRAIN_HYPERPARAMETERS", "[epochs]", "train.hyperparameters (INVOKE_TRAIN_HYPERPARAMETERS): "
                                                 "['epochs'] is not a mapping: write {name: value, ...} (YAML or "
                                                 "JSON)"),
    ("INVOKE_TRAIN_HYPERPARAMETERS", "{epochs: [", None),
    ("INVOKE_TUNING_LEARNING_RATE", "0.1,0.001", "tuning.learning_rate: [0.1, 0.001] is no range: write [low, "
                                                 "high] with 0 < low < high, or [] to leave it out of the search"),
    ("INVOKE_LOCAL_ENDPONT_PORT", "18080", None),
    ("INVOKE_TRAIN_ARGS", "--epochs 3", None),
])
def test_a_bad_value_or_an_unknown_variable_is_one_line_naming_it(monkeypatch, variable, text, message):
    monkeypatch.setenv(variable, text)
    area = {"AWS": AwsSettings, "LOCAL": LocalSettings, "TRAIN": TrainSettings,
            "TUNING": TuningSettings}[variable.split("_")[1]]
    with pytest.raises(SettingError) as refused:
        load(invoke_config(), area)
    line = refused.value.message
    assert "\n" not in line and (line == message if message else variable.split("_", 1)[1].lower() in line.lower()
                                 or variable in line)


def test_an_unknown_key_in_invoke_yaml_is_an_error_not_ignored(project):
    folder = project("aws:\n  hyperparameters: {epochs: 3}\n")
    with pytest.raises(SettingError, match=r"^aws\.hyperparameters is no setting"):
        load(invoke_config(folder), DataSettings)


def test_each_setting_is_named_by_its_path_in_its_invoke_variable():
    assert env_name(AwsSettings, "sdk_role_validation") == "INVOKE_AWS_SDK_ROLE_VALIDATION"
    assert env_name(ProjectSettings, "target") == "INVOKE_TARGET"


def test_docs_configuration_md_lists_every_setting_as_declared():
    page = reference.PAGE.read_text()
    assert page == reference.page_with_tables(page), "run `python -m configuration.reference --write`"
    for area in AREAS:
        for spec in dataclasses.fields(area):
            for consumer in spec.metadata["consumer"].split(", "):
                assert (REPO_ROOT / consumer).is_file(), f"{spec.name}: consumer {consumer} does not exist"


# ----------------------------------------------------------------------------------------------- hyperparameters

def test_the_mapping_and_set_merge_into_train_py_flags_under_train_py_s_own_names(monkeypatch):
    monkeypatch.setenv("INVOKE_TRAIN_HYPERPARAMETERS", "{learning-rate: 0.01, epochs: 3}")
    merged = hyperparameters.from_settings(load(invoke_config(), TrainSettings), ["batch_size=16", "compile=yes"])
    assert merged == {"lr": 0.01, "epochs": 3, "batch_size": 16, "compile": True}
    assert hyperparameters.as_flags(merged) == ["--lr", "0.01", "--epochs", "3", "--batch-size", "16", "--compile"]
    args = hyperparameters.train_parser().parse_args(hyperparameters.as_flags(merged))
    assert (args.lr, args.epochs, args.batch_size, args.compile) == (0.01, 3, 16, True)


def test_sagemaker_s_hyperparameters_are_train_py_flags_as_the_container_passes_them():
    from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

    merged = hyperparameters.merge([("--set", [("learning_rate", "0.002"), ("image-size", 64)])])
    args = hyperparameters.train_parser().parse_args(hyperparameters_to_cli_args(
        hyperparameters.as_sagemaker(merged)))
    assert (args.lr, args.image_size) == (0.002, 64)


@pytest.mark.parametrize("sources, message", [
    ([("train.hyperparameters", [("lr", 0.1)]), ("--set", [("learning_rate", 0.2)])],
     "hyperparameter lr is given twice: by train.hyperparameters (lr=0.1) and by --set (learning_rate=0.2); "
     "keep one"),
    ([("--set", [("epochs", 2), ("epochs", 3)])],
     "hyperparameter epochs is given twice: by --set (epochs=2) and by --set (epochs=3); keep one"),
    ([("--set", [("learning_rat", 0.1)])],
     "hyperparameter 'learning_rat' is not a flag of training/train.py (`python training/train.py --help` lists "
     "them)"),
    ([("--set", [("model-dir", "x")])], "hyperparameter 'model-dir' is set by the target: use train.model_dir"),
    ([("--set", [("epochs", "many")])], "hyperparameter epochs: 'many' is not a valid --epochs (int)"),
    ([("--set", [("arch", "vgg")])],
     "hyperparameter arch: 'vgg' is not one of resnet50, resnet18, mobilenet_v3_large, efficientnet_b0"),
])
def test_a_hyperparameter_given_twice_unknown_or_bad_is_one_line(sources, message):
    with pytest.raises(SettingError) as refused:
        hyperparameters.merge(sources)
    assert refused.value.message == message


def test_set_needs_name_equals_value_and_reads_the_value_as_yaml():
    assert hyperparameters.parse_assignments(["lr=0.01", "arch=resnet18", "compile=true"]) == [
        ("lr", 0.01), ("arch", "resnet18"), ("compile", True)]
    with pytest.raises(SettingError, match="write --set name=value"):
        hyperparameters.parse_assignments(["lr"])


def test_a_fixed_value_of_a_tuned_hyperparameter_is_given_twice_unless_its_range_is_empty():
    with pytest.raises(SettingError, match="hyperparameter lr is given twice: as a fixed value and as the range "
                                           "tuning.learning_rate searches"):
        hyperparameters.check_not_tuned({"lr": 0.1}, ["learning_rate", "epochs"])
    hyperparameters.check_not_tuned({"lr": 0.1}, ["epochs"])


def test_an_on_off_flag_cannot_reach_sagemaker():
    with pytest.raises(SettingError, match="hyperparameter compile is an on/off flag"):
        hyperparameters.as_sagemaker({"compile": True})


# ------------------------------------------------------------------------------------------- through invoke's CLI

INVOKE = str(Path(__import__("sys").executable).with_name("invoke"))


def _invoke(args, cwd=REPO_ROOT, **variables):
    import os
    import subprocess

    env = {name: value for name, value in os.environ.items() if not name.startswith("INVOKE_")}
    return subprocess.run([INVOKE, *args], cwd=cwd, env={**env, **variables}, capture_output=True, text=True,
                          timeout=120)


def test_a_relative_path_means_the_same_folder_from_any_working_directory(tmp_path):
    relative = f"build/test-configuration-{tmp_path.name}"
    result = _invoke(["status"], cwd=REPO_ROOT / "tests" / "fixtures", INVOKE_LOCAL_STATE_DIR=relative)
    assert result.returncode == 0, result.stderr
    assert str(REPO_ROOT / relative / "stack.json") in result.stdout
    assert not (REPO_ROOT / "tests" / "fixtures" / "build").exists()


@pytest.mark.parametrize("args, variables, line", [
    (["status"], {"INVOKE_LOCAL_ENDPOINT_PORT": "80a"},
     "local.endpoint_port (INVOKE_LOCAL_ENDPOINT_PORT): '80a' is not a whole number"),
    (["status"], {"INVOKE_TARGET": "cloud"}, "target (INVOKE_TARGET): 'cloud' is not one of local, aws"),
    (["train", "--set", "lr=0.1"], {"INVOKE_TRAIN_HYPERPARAMETERS": "{learning_rate: 0.2}"},
     "hyperparameter lr is given twice: by train.hyperparameters (learning_rate=0.2) and by --set (lr=0.1); keep one"),
])
def test_a_bad_setting_stops_the_task_with_one_line_and_no_traceback(args, variables, line):
    result = _invoke(args, **variables)
    assert (result.returncode, result.stderr.strip(), result.stdout) == (1, line, "")
