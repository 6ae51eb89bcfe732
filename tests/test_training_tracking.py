"""Every training run is an MLflow run (training/tracking.py), in real SQLite stores, and `invoke ui` serves them."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from training import local_run, tracking, train
from training.imagefolder_data import scan_data
from training_testlib import run_script, run_two_processes, sigterm_after_first_epoch, tiny_args
from configuration.areas import TrackingSettings, TrainSettings
from local.ports import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
INVOKE = Path(sys.executable).with_name("invoke")


def only_run(tracking_uri, experiment=tracking.DEFAULT_EXPERIMENT):
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [run.info.run_id for run in runs]
    return client, runs[0]


def steps(client, run, key="valid_loss"):
    return [(metric.step, metric.value) for metric in client.get_metric_history(run.info.run_id, key)]


@pytest.fixture(scope="module")
def tracked(tiny_image_folder, tmp_path_factory):
    """A 2-epoch run with no tracking URI given: its store is <output-dir>/mlflow."""
    work = tmp_path_factory.mktemp("tracked")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        args = train.parse_args(tiny_args(tiny_image_folder, work, "--mode", "finetune", "--epochs", "2",
                                          "--patience", "0", "--lr", "0.002"))
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    report = train.main(args)
    return work, report


def test_a_run_without_a_tracking_uri_keeps_its_mlflow_run_in_its_output_folder(tracked, tiny_image_folder):
    work, report = tracked
    written = json.loads((work / "output" / "metrics.json").read_text())
    uri = tracking.store_uri(work / "output" / "mlflow")
    client, run = only_run(uri)
    assert written["mlflow"] == {"tracking_uri": uri, "experiment_id": run.info.experiment_id,
                                 "run_id": run.info.run_id}
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((work / "output" / "mlflow" / "artifacts").as_uri())
    # the settings of train.py, as given
    assert {key: run.data.params[key] for key in ("arch", "mode", "epochs", "lr", "batch_size", "image_size")} == {
        "arch": "resnet18", "mode": "finetune", "epochs": "2", "lr": "0.002", "batch_size": "4", "image_size": "32"}
    # every epoch's metrics at step=epoch, under the names of the log line, equal to metrics.json's history
    for key in ("train_loss", "valid_loss", "valid_accuracy", "test_top5_accuracy", "lr", "images_per_second"):
        assert steps(client, run, key) == [(row["epoch"], pytest.approx(row[key])) for row in written["history"]]
    assert run.data.metrics["best_epoch"] == written["final"]["best_epoch"]
    assert run.data.metrics["best_valid_loss"] == pytest.approx(written["final"]["valid_loss"])
    assert run.data.metrics["evaluation_test_accuracy"] == pytest.approx(written["evaluation"]["test_accuracy"])


def test_the_run_names_its_data_by_a_fingerprint_that_finds_the_runs_on_the_same_data(tracked, tiny_image_folder):
    work, _ = tracked
    client, run = only_run(tracking.store_uri(work / "output" / "mlflow"))
    fingerprint = tracking.dataset_fingerprint(scan_data(tiny_image_folder))
    assert run.data.tags[tracking.DATASET_TAG] == fingerprint["digest"]
    assert {key: run.data.params[f"dataset_{key}"] for key in ("train_samples", "valid_samples", "test_samples",
                                                                "classes")} == {
        "train_samples": "24", "valid_samples": "12", "test_samples": "12", "classes": "3"}
    assert [dataset.dataset.digest for dataset in run.inputs.dataset_inputs] == [fingerprint["digest"]]
    # metrics.json names the data too (the registries record it with the version)
    assert json.loads((work / "output" / "metrics.json").read_text())["dataset"] == fingerprint
    found = client.search_runs([run.info.experiment_id],
                               f"tags.{tracking.DATASET_TAG} = '{fingerprint['digest']}'")
    assert [r.info.run_id for r in found] == [run.info.run_id]


def test_the_fingerprint_changes_with_a_files_content_size_not_with_its_mtime(tiny_image_folder, tmp_path):
    copy = Path(shutil.copytree(tiny_image_folder, tmp_path / "copy"))
    before = tracking.dataset_fingerprint(scan_data(copy))
    assert before == tracking.dataset_fingerprint(scan_data(tiny_image_folder))
    image = next((copy / "train").rglob("*.jpg"))
    os.utime(image, (1, 1))
    assert tracking.dataset_fingerprint(scan_data(copy)) == before
    with open(image, "ab") as handle:
        handle.write(b"\0")
    assert tracking.dataset_fingerprint(scan_data(copy))["digest"] != before["digest"]


def test_the_run_holds_the_output_folder_and_the_model_directory_as_artifacts(tracked, tmp_path):
    work, _ = tracked
    client, run = only_run(tracking.store_uri(work / "output" / "mlflow"))
    logged = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path)))
    # the evaluation report is in the output folder before the artifacts are logged (contract 1)
    assert sorted(p.name for p in (logged / "output").iterdir()) == ["evaluation", "metrics.json",
                                                                      "training_curve.png"]
    assert (logged / "output" / "evaluation" / "report.json").read_bytes() == (
        work / "output" / "evaluation" / "report.json").read_bytes()
    assert json.loads((logged / "output" / "metrics.json").read_text())["mlflow"]["run_id"] == run.info.run_id
    model = work / "model"
    assert (logged / "model" / "model.pth").read_bytes() == (model / "model.pth").read_bytes()
    assert sorted(p.relative_to(logged / "model") for p in (logged / "model").rglob("*")) == sorted(
        p.relative_to(model) for p in model.rglob("*"))


def test_a_run_logs_only_what_it_wrote_in_a_reused_output_folder(tiny_image_folder, tmp_path):
    """build/output is the same folder run after run: an earlier run's files, or its evaluation report when this
    data set has no test split, are neither this run's artifacts nor left to read as this run's report."""
    data = tmp_path / "no-test-split"
    shutil.copytree(tiny_image_folder, data, ignore=lambda folder, names: ["test"] if folder == str(
        tiny_image_folder) else [])
    work = tmp_path / "work"
    (work / "output" / "evaluation").mkdir(parents=True)
    (work / "output" / "evaluation" / "report.json").write_text("{}")
    (work / "output" / "notes-of-an-earlier-run.txt").write_text("not this run's")
    uri = tracking.store_uri(tmp_path / "store")
    train.main(train.parse_args(tiny_args(data, work, "--epochs", "1", "--tracking-uri", uri)))
    client, run = only_run(uri)
    logged = Path(client.download_artifacts(run.info.run_id, "output", str(tmp_path / "logged")))
    assert sorted(p.name for p in logged.iterdir()) == ["metrics.json", "training_curve.png"]
    assert not (work / "output" / "evaluation").exists()


def test_two_torchrun_ranks_make_one_run_with_each_epoch_once(tiny_image_folder, tmp_path):
    uri = tracking.store_uri(tmp_path / "store")
    run_two_processes(tiny_args(tiny_image_folder, tmp_path, "--epochs", "2", "--patience", "0",
                                "--tracking-uri", uri), tmp_path)
    client, run = only_run(uri)
    assert [step for step, _ in steps(client, run)] == [1, 2]
    assert run.data.tags["world_size"] == "2"
    assert run.info.status == "FINISHED"


def test_a_run_resumed_after_sigterm_goes_on_in_the_same_mlflow_run(tiny_image_folder, tmp_path):
    uri = tracking.store_uri(tmp_path / "store")
    args = tiny_args(tiny_image_folder, tmp_path, "--epochs", "2", "--patience", "0", "--tracking-uri", uri)
    sigterm_after_first_epoch(args)
    client, run = only_run(uri)
    assert run.info.status == "KILLED"
    assert [step for step, _ in steps(client, run)] == [1]
    result = run_script(args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    client, resumed = only_run(uri)
    assert resumed.info.run_id == run.info.run_id
    assert resumed.info.status == "FINISHED"
    assert [step for step, _ in steps(client, resumed)] == [1, 2]


def test_a_tracking_uri_that_cannot_be_opened_stops_before_training_with_one_line(tiny_image_folder, tmp_path):
    result = run_script(tiny_args(tiny_image_folder, tmp_path, "--epochs", "1", "--tracking-uri",
                                  "nosuchscheme://nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot open an MLflow run at nosuchscheme://")
    assert not (tmp_path / "output" / "metrics.json").exists()


def test_invoke_train_logs_to_the_projects_store_unless_mlflow_tracking_uri_names_another(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    train_settings = TrainSettings(model_dir=tmp_path / "m", output_dir=tmp_path / "o", checkpoint_dir=tmp_path / "c",
                                   archive=tmp_path / "m.tar.gz")
    command = local_run.train_command(train_settings, data=tmp_path, chosen={},
                                      tracking=TrackingSettings(store=tmp_path / "store", experiment="team"))
    assert command[command.index("--tracking-uri") + 1] == tracking.store_uri(tmp_path / "store")
    assert command[command.index("--experiment") + 1] == "team"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    command = local_run.train_command(train_settings, data=tmp_path, chosen={})
    assert command[command.index("--tracking-uri") + 1] == "http://tracking.example:5000"   # the variable wins


def _start_ui(store, port):
    env = {**os.environ, "INVOKE_TRACKING_STORE": str(store), "INVOKE_TRACKING_UI_PORT": str(port),
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([str(INVOKE), "ui"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_invoke_ui_serves_the_runs_over_mlflows_rest_api_on_loopback_until_ctrl_c(tracked):
    work, _ = tracked
    port = free_port()
    ui = _start_ui(work / "output" / "mlflow", port)
    try:
        lines = [ui.stdout.readline()]
        while "MLflow UI:" not in lines[-1]:
            lines.append(ui.stdout.readline())
            assert lines[-1], lines
        assert lines[-1].endswith(f"MLflow UI: http://127.0.0.1:{port} (Ctrl-C stops it)\n")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
                                         data=json.dumps({"max_results": 10}).encode(),
                                         headers={"Content-Type": "application/json"})
        experiments = json.loads(urllib.request.urlopen(request, timeout=30).read())["experiments"]
        experiment = next(e for e in experiments if e["name"] == tracking.DEFAULT_EXPERIMENT)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
                                         data=json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode(),
                                         headers={"Content-Type": "application/json"})
        runs = json.loads(urllib.request.urlopen(request, timeout=30).read())["runs"]
        run_id = json.loads((work / "output" / "metrics.json").read_text())["mlflow"]["run_id"]
        assert [run["info"]["run_id"] for run in runs] == [run_id]
        listing = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/artifacts/list?run_id={run_id}", timeout=30).read())
        assert sorted(entry["path"] for entry in listing["files"]) == ["model", "output"]
        with socket.socket() as other:
            other.settimeout(2)
            assert other.connect_ex(("127.0.0.1", port)) == 0
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=60) == 0
    finally:
        if ui.poll() is None:
            ui.kill()
    deadline = time.monotonic() + 10
    with socket.socket() as probe:
        while probe.connect_ex(("127.0.0.1", port)) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the server outlived `invoke ui`"


def test_invoke_ui_on_a_port_in_use_says_so_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ui = _start_ui(tmp_path / "store", port)
        output, _ = ui.communicate(timeout=60)
    assert ui.returncode == 1
    assert output.strip().splitlines() == [f"port {port} on 127.0.0.1 is taken (another "
                                           "`invoke ui`?): stop that, or set tracking.ui_port "
                                           "(INVOKE_TRACKING_UI_PORT) to a free port"]
