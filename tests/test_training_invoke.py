"""`invoke train` and the functions `invoke deploy` uses to get a model (training/local_run.py)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from configuration.areas import TrainSettings, load
from local.settings import LocalSettings
from training import local_run
from training import synthetic

REPO_ROOT = Path(__file__).resolve().parent.parent
INVOKE = Path(sys.executable).with_name("invoke")
TINY_TRAINING = {"arch": "resnet18", "weights": "none", "mode": "finetune", "image_size": 32, "batch_size": 8,
                 "num_workers": 0, "threads": 1}


def settings(tmp_path, data_dir):
    return {"data": {"dir": str(data_dir), "synthetic_dir": str(tmp_path / "synthetic")},
            "train": {"model_dir": str(tmp_path / "build" / "model"), "output_dir": str(tmp_path / "build" / "out"),
                      "checkpoint_dir": str(tmp_path / "build" / "ck"),
                      "archive": str(tmp_path / "build" / "model.tar.gz"),
                      "hyperparameters": {**TINY_TRAINING, "epochs": 1}}}


def test_invoke_train_from_a_subfolder_writes_the_model_where_deploy_looks(tiny_image_folder, tmp_path):
    """Relative paths are the repository root's: run in tests/, `invoke train` writes build/... of the repository,
    which is where the local stack's settings (those `invoke deploy` reads) point."""
    relative = f"build/test-train-{tmp_path.name}"
    env = {**os.environ, "INVOKE_DATA_DIR": str(tiny_image_folder),
           "INVOKE_TRAIN_HYPERPARAMETERS": json.dumps(TINY_TRAINING), "INVOKE_TRAIN_MODEL_DIR": f"{relative}/model",
           "INVOKE_TRAIN_OUTPUT_DIR": f"{relative}/out", "INVOKE_TRAIN_CHECKPOINT_DIR": f"{relative}/ck",
           "INVOKE_TRAIN_ARCHIVE": f"{relative}/m.tar.gz"}
    try:
        result = subprocess.run([str(INVOKE), "train", "--set", "epochs=1"], cwd=REPO_ROOT / "tests", env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        config = json.loads((REPO_ROOT / relative / "model" / "model_config.json").read_text())
        assert config["class_names"] == ["Red circle", "Green square", "Blue triangle"]
        assert (REPO_ROOT / relative / "m.tar.gz").stat().st_size > 1000
        deploy_reads = LocalSettings.from_config({"train": {"model_dir": f"{relative}/model",
                                                            "archive": f"{relative}/m.tar.gz"}})
        assert (deploy_reads.model_dir, deploy_reads.archive) == (REPO_ROOT / relative / "model",
                                                                  REPO_ROOT / relative / "m.tar.gz")
        assert not (REPO_ROOT / "tests" / "build").exists()
    finally:
        shutil.rmtree(REPO_ROOT / relative, ignore_errors=True)


def test_invoke_train_reports_bad_data_in_one_line(tmp_path):
    env = {**os.environ, "INVOKE_DATA_DIR": str(tmp_path / "empty"),
           "INVOKE_TRAIN_HYPERPARAMETERS": json.dumps(TINY_TRAINING),
           "INVOKE_TRAIN_CHECKPOINT_DIR": str(tmp_path / "ck")}
    for split in ("train", "valid"):
        (tmp_path / "empty" / split).mkdir(parents=True)      # looks like a data set, holds no classes
    result = subprocess.run([str(INVOKE), "train"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'empty'}/train has 0 class folder(s): "
                                                  f"a classifier needs at least 2"]


def test_without_the_real_data_set_training_uses_the_synthetic_set_and_preset(tmp_path):
    data, preset = local_run.training_data(settings(tmp_path, tmp_path / "absent"))
    assert (data, preset) == (tmp_path / "synthetic", "synthetic-cpu")
    assert len(list((data / "train").iterdir())) == len(synthetic.CLASSES)

    train = load(settings(tmp_path, tmp_path / "absent"), TrainSettings)
    command = local_run.train_command(train, data=data, chosen={}, preset=preset, workers=2)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert command[command.index("--preset") + 1] == "synthetic-cpu"


def test_ensure_model_reuses_an_existing_model_and_builds_its_missing_archive(trained_model_dir, tmp_path):
    config = settings(tmp_path, tmp_path / "absent")
    shutil.copytree(trained_model_dir, config["train"]["model_dir"])
    assert local_run.ensure_model(config) == Path(config["train"]["model_dir"])
    assert Path(config["train"]["archive"]).exists()
    assert not (tmp_path / "synthetic").exists()                 # nothing was trained
