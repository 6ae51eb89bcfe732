"""The local model registry: versions of a real tiny training's MLflow run in a real SQLite store, registered by
`invoke train`, listed, approved and rejected as on AWS."""

import json
import re

import pytest
from invoke import Config, Context
from invoke.exceptions import Exit

from local import commands, model_registry
from training.tracking import DATASET_TAG


def context(tmp_path, model_dir, output_dir, name, **sections):
    """A task Context: the model and output folders given, the registered model `name` (the tracking experiment),
    the session's MLflow store (MLFLOW_TRACKING_URI, conftest)."""
    config = Config(overrides={"train": {"model_dir": str(model_dir), "output_dir": str(output_dir),
                                         "checkpoint_dir": str(tmp_path / "checkpoints"),
                                         "archive": str(tmp_path / "model.tar.gz"), **sections.pop("train", {})},
                               "tracking": {"experiment": name}, **sections})
    return Context(config=config)


@pytest.fixture
def registered(tmp_path, trained_model_dir, request):
    """The session's trained model registered once in a registered model of this test's own."""
    name = "reg-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40]
    c = context(tmp_path, trained_model_dir, trained_model_dir.parent / "output", name)
    return c, model_registry.register_trained_model(c.config, "local training (test)")[0]


def test_a_registered_version_is_pending_with_the_runs_metrics_data_and_fingerprint(registered, trained_model_dir):
    from mlflow.tracking import MlflowClient

    c, version = registered
    report = json.loads((trained_model_dir.parent / "output" / "metrics.json").read_text())
    run_id = report["mlflow"]["run_id"]
    assert (version.number, version.status) == (1, "PendingManualApproval")
    assert version.mlflow_run_id == run_id
    assert version.model_uri == f"runs:/{run_id}/model"
    assert version.metrics == {name: pytest.approx(report["final"][name], rel=1e-5)
                               for name in ("valid_accuracy", "valid_loss", "test_accuracy", "test_loss")}
    assert version.data == report["settings"]["data"]
    client = MlflowClient(model_registry.registry_uri(c.config))
    assert version.data_fingerprint == client.get_run(run_id).data.tags[DATASET_TAG]
    stored = client.get_model_version(model_registry.model_name(c.config), "1")
    assert stored.tags["approval_status"] == "PendingManualApproval"       # in MLflow itself, for its UI
    assert client.download_artifacts(run_id, "model/model_config.json")   # the version's source holds the model


def test_approve_and_reject_record_who_and_why_and_refuse_twice(registered, capsys):
    import tasks

    c, _ = registered
    who = model_registry.approver()
    tasks.approve(c, "1", reason="good enough for the demo", target="local")
    assert capsys.readouterr().out.strip().endswith(
        f"version 1 of {model_registry.model_name(c.config)}: PendingManualApproval -> Approved by {who} "
        "(good enough for the demo)")
    [version] = model_registry.versions(c.config)
    assert (version.status, version.approved_by, version.reason) == ("Approved", who, "good enough for the demo")
    with pytest.raises(Exit, match=r"^version 1 is already Approved \(approved by .*: good enough for the demo\): "
                                   r"nothing to change$"):
        tasks.approve(c, "1", target="local")
    tasks.approve(c, "1", reject=True, reason="wrong breed on puppies", target="local")
    listed = tasks.models(c, target="local")
    assert [(v.number, v.status, v.reason) for v in listed] == [(1, "Rejected", "wrong breed on puppies")]
    printed = capsys.readouterr().out
    assert f"rejected by {who} at " in printed and "valid accuracy " in printed
    with pytest.raises(Exit, match=r"^no version 4 in registered model reg-.* \(versions: 1\): `invoke models`"):
        tasks.approve(c, "4", target="local")


def test_the_served_version_is_found_by_the_models_weights(registered, trained_model_dir):
    c, version = registered
    weights = json.loads((trained_model_dir / "model_config.json").read_text())["model_version"]
    assert model_registry.served_version(c.config, weights) == version
    assert model_registry.served_version(c.config, "0123456789ab") is None        # trained before the registry
    assert model_registry.register_trained_model(c.config) == (version, False)   # the same weights: one version
    assert len(model_registry.versions(c.config)) == 1


def test_invoke_train_registers_each_run_as_a_new_version(tmp_path, tiny_image_folder, capsys):
    import tasks

    c = context(tmp_path, tmp_path / "model", tmp_path / "output", "reg-invoke-train",
                data={"dir": str(tiny_image_folder)},
                train={"hyperparameters": {"arch": "resnet18", "weights": "none", "mode": "finetune",
                                           "image-size": 32, "epochs": 1, "batch-size": 8, "num-workers": 0,
                                           "threads": 1}})
    tasks.train(c, target="local")
    tasks.train(c, target="local", fresh=True)           # training is deterministic: the same weights again
    assert "the same weights are version 1 of reg-invoke-train already" in capsys.readouterr().out
    tasks.train(c, target="local", fresh=True, set_=["lr=0.05"])
    printed = capsys.readouterr().out
    assert "registered as version 2 of reg-invoke-train, pending approval" in printed
    listed = model_registry.versions(c.config)
    assert [(v.number, v.status) for v in listed] == [(2, "PendingManualApproval"), (1, "PendingManualApproval")]
    assert listed[0].source == "local training (invoke train, 1 worker)"
    assert listed[0].mlflow_run_id != listed[1].mlflow_run_id
    weights = json.loads((tmp_path / "model" / "model_config.json").read_text())["model_version"]
    assert commands.registered_text(c, weights) == "registered version 2 of reg-invoke-train (PendingManualApproval)"


def test_a_model_trained_before_the_registry_reads_not_registered(tmp_path):
    c = context(tmp_path, tmp_path / "model", tmp_path / "output", "reg-nothing-yet")
    assert commands.registered_text(c, "0123456789ab") == "not registered"
    assert commands.models(c) == []
