"""training/train.py end to end on tiny generated data: what a user (or SageMaker, or the serving code) relies on."""

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training import train
from architectures import build_model
from training.metric_lines import SPLITS, metric_pattern
from training.model_archive import build_model_archive
from training.shared_memory_gradients import host_supports_polling
from training.training_curve import curve_figure
from training_testlib import (TRAIN_SCRIPT, assert_report_is_what_the_model_scores, assert_same_history, history,
                              run_script, run_two_processes, serving_scores, sigterm_after_first_epoch, tiny_args)


# --- the model directory --------------------------------------------------------------------------------------

def test_model_directory_holds_weights_cleaned_class_names_config_and_code(trained_model_dir):
    config = json.loads((trained_model_dir / "model_config.json").read_text())
    assert config["class_names"] == ["Red circle", "Green square", "Blue triangle"]
    assert {k: config[k] for k in ("arch", "num_classes", "image_size", "weights", "mode")} == {
        "arch": "resnet18", "num_classes": 3, "image_size": 32, "weights": "none", "mode": "finetune"}
    assert re.fullmatch(r"[0-9a-f]{12}", config["model_version"])
    assert config["metrics"] == json.loads((trained_model_dir.parent / "output" / "metrics.json").read_text())["final"]
    code = {p.name for p in (trained_model_dir / "code").iterdir()}
    assert {"preprocessing.py", "architectures.py", "requirements.txt"} <= code

    model = build_model(config["arch"], config["num_classes"], weights="none")
    model.load_state_dict(torch.load(trained_model_dir / "model.pth", weights_only=True))  # strict: bare model
    assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_the_recorded_test_metrics_are_what_the_saved_weights_score_through_the_serving_preprocessing(
        trained_model_dir, tiny_image_folder):
    config = json.loads((trained_model_dir / "model_config.json").read_text())
    probabilities, labels, _ = serving_scores(trained_model_dir, tiny_image_folder)
    accuracy = (probabilities.argmax(axis=1) == labels).mean()
    loss = -np.log(probabilities[np.arange(len(labels)), labels]).mean()
    assert accuracy == pytest.approx(config["metrics"]["test_accuracy"])
    assert loss == pytest.approx(config["metrics"]["test_loss"], rel=1e-4)


def test_model_archive_has_the_directory_at_top_level_and_is_reproducible(trained_model_dir, tmp_path):
    import tarfile

    archive = trained_model_dir.parent / "model.tar.gz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"model.pth", "model_config.json", "code/inference.py", "code/requirements.txt"} <= names
    again = build_model_archive(trained_model_dir, tmp_path / "again.tar.gz")
    assert again.read_bytes() == archive.read_bytes()


def test_metrics_file_has_loss_top1_top5_for_every_split_and_epoch_and_a_curve(trained_model_dir):
    output = trained_model_dir.parent / "output"
    report = json.loads((output / "metrics.json").read_text())
    row = report["history"][0]
    for split in ("train", "valid", "test"):
        for name in ("loss", "accuracy", "top5_accuracy"):
            assert f"{split}_{name}" in row
    assert report["final"]["best_epoch"] == 1
    with Image.open(output / "training_curve.png") as curve:
        assert curve.format == "PNG" and curve.size == (880, 320)
        curve.verify()


def test_the_training_curve_draws_every_split_at_every_epoch_on_both_panels(tmp_path):
    history = [{"epoch": epoch, **{f"{split}_{metric}": 1 / epoch + i / 10
                                   for i, split in enumerate(SPLITS) for metric in ("loss", "accuracy")}}
               for epoch in (1, 2, 3)]
    loss_panel, accuracy_panel = curve_figure(history).axes
    for panel, metric in ((loss_panel, "loss"), (accuracy_panel, "accuracy")):
        assert [line.get_label() for line in panel.get_lines()] == list(SPLITS)
        for line, split in zip(panel.get_lines(), SPLITS):
            assert list(line.get_xdata()) == [1, 2, 3]
            assert list(line.get_ydata()) == [row[f"{split}_{metric}"] for row in history]
    assert accuracy_panel.get_ylim() == (0, 1)


def test_without_matplotlib_training_ends_with_a_warning_instead_of_a_curve(monkeypatch, tmp_path, caplog):
    from training import training_curve

    for module in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)       # what an import of a missing package meets
    logger = logging.getLogger("train")      # train.py's logging setup stops it propagating to caplog's root
    logger.addHandler(caplog.handler)
    try:
        assert training_curve.write_training_curve([{"epoch": 1}], tmp_path / "curve.png") is None
    finally:
        logger.removeHandler(caplog.handler)
    assert not (tmp_path / "curve.png").exists()
    assert "no training curve: matplotlib is not installed" in caplog.text


# --- head mode --------------------------------------------------------------------------------------------------

def test_head_mode_freezes_the_backbone_and_reuses_cached_features(tiny_image_folder, tmp_path, capsys):
    args = tiny_args(tiny_image_folder, tmp_path, "--mode", "head", "--epochs", "2", "--batch-size", "8")
    first = train.main(train.parse_args(args))
    assert "features loaded from cache" not in capsys.readouterr().out

    torch.manual_seed(0)   # train.py seeds with --seed (0) before building the model
    untouched = build_model("resnet18", 3).backbone.state_dict()
    trained = torch.load(tmp_path / "model" / "model.pth", weights_only=True)
    assert all(torch.equal(trained[f"backbone.{k}"], v) for k, v in untouched.items())

    second = train.main(train.parse_args(args + ["--no-resume"]))
    out = capsys.readouterr().out
    assert out.count("features loaded from cache") == 3      # train, valid and test
    assert_same_history(second["history"], first["history"])
    assert_report_is_what_the_model_scores(tmp_path, tiny_image_folder)     # from the cached test features


# --- interruption, resume, checkpoints -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def uninterrupted(tiny_image_folder, tmp_path_factory):
    """A 3-epoch fine-tuning run, the reference the interrupted runs must reproduce."""
    work = tmp_path_factory.mktemp("uninterrupted")
    train.main(train.parse_args(tiny_args(tiny_image_folder, work, "--mode", "finetune", "--epochs", "3")))
    return work


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_ends_like_an_uninterrupted_one(
        tiny_image_folder, tmp_path, uninterrupted):
    args = tiny_args(tiny_image_folder, tmp_path, "--mode", "finetune", "--epochs", "3")
    lines = sigterm_after_first_epoch(args)
    assert any("SIGTERM" in line and "saved" in line for line in lines), "".join(lines)
    assert "Traceback" not in "".join(lines)
    assert (tmp_path / "checkpoints" / "checkpoint.pt").exists()
    assert not (tmp_path / "model" / "model.pth").exists()

    resumed = run_script(args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from the checkpoint" in resumed.stdout
    assert_same_history(history(tmp_path), history(uninterrupted))
    # SageMaker's metric definitions read the values back from the log: every epoch's in order, then the best
    # epoch's, which SageMaker keeps as the job's final value
    logged = [float(value) for value in re.findall(metric_pattern("valid", "loss"), resumed.stdout)]
    report = json.loads((tmp_path / "output" / "metrics.json").read_text())
    expected = [row["valid_loss"] for row in report["history"][1:]] + [report["final"]["valid_loss"]]
    assert logged == pytest.approx(expected, abs=1e-4)


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(uninterrupted, tiny_image_folder, tmp_path,
                                                                     capsys):
    shutil.copytree(uninterrupted / "checkpoints", tmp_path / "checkpoints")
    latest = tmp_path / "checkpoints" / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:1000])      # a write cut short by a spot interruption

    report = train.main(train.parse_args(tiny_args(tiny_image_folder, tmp_path, "--mode", "finetune",
                                                   "--epochs", "3")))
    out = capsys.readouterr().out
    assert "falling back to the previous one" in out
    assert "at the end of epoch 2" in out
    assert_same_history(report["history"], history(uninterrupted))


def test_an_unreadable_only_checkpoint_stops_with_one_line_saying_what_to_do(tiny_image_folder, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint.pt").write_bytes(b"torn")
    result = run_script(tiny_args(tiny_image_folder, tmp_path, "--epochs", "1"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: checkpoint") and "remove" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_checkpoint_of_other_settings_is_not_resumed_silently(uninterrupted, tiny_image_folder, tmp_path):
    shutil.copytree(uninterrupted / "checkpoints", tmp_path / "checkpoints")
    args = train.parse_args(tiny_args(tiny_image_folder, tmp_path, "--mode", "finetune", "--epochs", "3",
                                      "--lr", "0.01"))
    with pytest.raises(train.UsageError, match="other lr: pass --no-resume"):
        train.main(args)


# --- distributed ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def learnable_image_folder(tmp_path_factory):
    """3 classes of 24 training images at 56 px: enough for a 4-epoch run to learn them (the tiny set is not)."""
    from training import synthetic

    root = tmp_path_factory.mktemp("learnable-data") / "shapes"
    return synthetic.make_synthetic_dataset(root, classes=3, split_sizes={"train": 24, "valid": 8, "test": 8},
                                            image_size=56, seed=1)


def test_two_torchrun_processes_each_train_on_half_and_learn_as_well_as_one_process(learnable_image_folder,
                                                                                     tmp_path):
    def args(work):
        return tiny_args(learnable_image_folder, work, "--mode", "finetune", "--epochs", "4", "--image-size", "48",
                         "--batch-size", "16")

    single = train.main(train.parse_args(args(tmp_path / "one")))["final"]
    result, report = run_two_processes(args(tmp_path / "two"), tmp_path / "two")
    assert report["world_size"] == 2
    assert report["train_samples_per_rank"] == [36, 36]          # 72 training images, half each
    assert "2 process(es)" in result.stdout
    if host_supports_polling():
        assert "gradients are averaged through shared memory" in result.stdout
    both = report["final"]
    # The same global batches; batch-norm statistics come from each rank's 8 images instead of all 16. (With 2
    # images a rank, as a batch of 4 would give, they are too noisy to learn from in so short a run.)
    assert single["valid_accuracy"] >= 0.9 and both["valid_accuracy"] >= 0.9
    assert abs(both["valid_accuracy"] - single["valid_accuracy"]) <= 0.1          # 24 images: 2 may differ
    # one evaluation report, of both ranks' halves of the test split, as one process scores the same weights
    assert result.stdout.count("evaluation report written") == 1
    for work in (tmp_path / "one", tmp_path / "two"):
        assert assert_report_is_what_the_model_scores(work, learnable_image_folder)["images"] == 24


def test_a_sigterm_that_reaches_one_torchrun_rank_at_an_epochs_end_stops_every_rank_there(tiny_image_folder,
                                                                                            tmp_path):
    """Each rank's SIGTERM flag is its own; the check at an epoch's end must be collective, or the signalled rank
    leaves while the other waits for it in the next batch's all-reduce and dies of the closed connection."""
    from training.sigterm_relay import children_of

    process = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(TRAIN_SCRIPT),
         *tiny_args(tiny_image_folder, tmp_path, "--mode", "finetune", "--epochs", "3")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "epoch=1 " in line:       # rank 0 logs it, then checkpoints: the signal lands before its check
            rank_zero = next(pid for pid in children_of(process.pid)
                             if b"\0RANK=0\0" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes())
            os.kill(rank_zero, signal.SIGTERM)
            break
    lines += process.stdout.readlines()
    process.wait(timeout=120)
    output = "".join(lines)
    assert "SIGTERM: checkpoint of epoch 1 saved" in output, output
    assert not re.search(r"\[rank\d\]: Traceback", output) and "epoch=2 " not in output, output
    assert torch.load(tmp_path / "checkpoints" / "checkpoint.pt", weights_only=False)["epoch"] == 1


# --- bad input --------------------------------------------------------------------------------------------------

def _copy(folder, tmp_path):
    return Path(shutil.copytree(folder, tmp_path / "data"))


@pytest.mark.parametrize("breakage, message", [
    ("missing", "does not exist: run `invoke data`"),
    ("no_valid", "has no valid/ split"),
    ("one_class", "a classifier needs at least 2"),
    ("empty_class", "class folder(s) without images: 002.Green_square"),
    ("unknown_valid_class", "class folder(s) not in train/: 009.Zebra"),
])
def test_unusable_data_folders_are_refused_with_one_line(tiny_image_folder, tmp_path, breakage, message):
    data = _copy(tiny_image_folder, tmp_path)
    if breakage == "missing":
        data = tmp_path / "nowhere"
    elif breakage == "no_valid":
        shutil.rmtree(data / "valid")
    elif breakage == "one_class":
        for folder in ("002.Green_square", "003.Blue_triangle"):
            shutil.rmtree(data / "train" / folder)
    elif breakage == "empty_class":
        for image in (data / "train" / "002.Green_square").iterdir():
            image.unlink()
    elif breakage == "unknown_valid_class":
        (data / "valid" / "009.Zebra").mkdir()
        shutil.copy(next((data / "valid" / "001.Red_circle").iterdir()), data / "valid" / "009.Zebra" / "z.jpg")
    with pytest.raises(train.UsageError) as raised:
        train.main(train.parse_args(tiny_args(data, tmp_path, "--epochs", "1")))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_script_reports_a_bad_data_folder_in_one_line_with_status_2(tmp_path):
    result = run_script(["--data", str(tmp_path / "nowhere"), "--weights", "none"])
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: data folder") and "Traceback" not in result.stderr


def test_truncated_and_unreadable_images_are_reported_by_path_and_skipped(tiny_image_folder, tmp_path, capsys):
    data = _copy(tiny_image_folder, tmp_path)
    truncated = sorted((data / "train" / "001.Red_circle").iterdir())[0]
    truncated.write_bytes(truncated.read_bytes()[:300])
    not_an_image = data / "train" / "002.Green_square" / "notes.jpg"
    not_an_image.write_text("this is not a JPEG")

    report = train.main(train.parse_args(tiny_args(data, tmp_path, "--mode", "finetune", "--epochs", "1",
                                                   "--batch-size", "25")))    # all 25 files in one batch
    out = capsys.readouterr().out
    assert f"skipping unreadable image {truncated}" in out
    assert f"skipping unreadable image {not_an_image}" in out
    assert report["train_samples_per_rank"] == [24 - 1]        # 24 good images + 1 junk file, 1 good one truncated


def test_imagenet_weights_offline_fail_at_once_with_one_line_saying_what_to_do(tiny_image_folder, tmp_path,
                                                                                monkeypatch):
    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))     # nothing cached there
    monkeypatch.setattr(socket, "create_connection", no_network)
    started = time.monotonic()
    with pytest.raises(train.UsageError) as raised:
        train.main(train.parse_args(tiny_args(tiny_image_folder, tmp_path, "--weights", "imagenet")))
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert "\n" not in message
    assert "resnet18-f37072fd.pth" in message and "--weights none" in message
    assert str(tmp_path / "torch-home") in message


# --- flags and environment ------------------------------------------------------------------------------------

def test_sagemaker_spellings_and_environment_give_the_defaults(monkeypatch):
    monkeypatch.setenv("SM_CHANNEL_TRAINING", "/opt/ml/input/data/training")
    monkeypatch.setenv("SM_MODEL_DIR", "/opt/ml/model")
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")
    monkeypatch.setenv("TRAINING_JOB_NAME", "dog-breeds-tune-007")
    args = train.parse_args(["--learning_rate", "0.01", "--batch_size", "64", "--epochs", "5"])
    assert (args.lr, args.batch_size, args.epochs) == (0.01, 64, 5)
    assert (args.data, args.model_dir, args.output_dir) == (
        "/opt/ml/input/data/training", "/opt/ml/model", "/opt/ml/output/data")
    assert args.checkpoint_dir == "/opt/ml/checkpoints/dog-breeds-tune-007"
    # the feature cache stays out of /opt/ml/checkpoints, which SageMaker syncs (and copies into every tuning job)
    assert args.feature_cache_dir == "/opt/ml/input/feature-cache"
    assert "/opt/ml/checkpoints/<TRAINING_JOB_NAME>" in train.get_args_parser().format_help()


def test_local_defaults_help_and_presets(monkeypatch):
    for name in ("SM_CHANNEL_TRAINING", "SM_CHANNEL_TRAIN", "SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", "SM_TRAINING_ENV"):
        monkeypatch.delenv(name, raising=False)
    args = train.parse_args([])
    assert (args.data, args.model_dir, args.checkpoint_dir) == ("data/dogImages", "build/model", "build/checkpoints")
    assert args.feature_cache_dir == ""                     # <checkpoint-dir>/features
    assert (args.arch, args.weights, args.mode) == ("resnet50", "imagenet", "head")
    preset = train.parse_args(["--preset", "synthetic-cpu", "--epochs", "3"])
    assert (preset.arch, preset.image_size, preset.epochs) == ("resnet18", 96, 3)    # the explicit flag wins
    help_text = train.get_args_parser().format_help()
    assert "--batch-size" in help_text and "(default: 64)" in help_text
