"""Training on this machine, as `invoke train` and `invoke deploy` need it.

`train_locally(config)` runs training/train.py (under torchrun for several workers) with the paths of the invoke
configuration; when the configured real data set is absent it trains on the synthetic set (made if needed) with
train.py's `synthetic-cpu` preset. `ensure_model(config)` returns the model directory, training only if there is
none yet. `config` is the invoke configuration (or a dict of the same shape: data.dir, train.model_dir, ...), read
through configuration.areas.
"""

import logging
import shlex
import subprocess
import sys
from pathlib import Path

from configuration.areas import DataSettings, TrackingSettings, TrainSettings, load
from model_layout import CODE_DIR, CONFIG_FILE, WEIGHTS_FILE
from training import download, hyperparameters, synthetic
from training.imagefolder_data import DataError, scan_data
from training.model_archive import build_model_archive
from training.tracking import project_tracking_uri

TRAIN_SCRIPT = Path(__file__).resolve().parent / "train.py"
SYNTHETIC_PRESET = "synthetic-cpu"

log = logging.getLogger("train")


class LocalTrainingError(RuntimeError):
    """Training did not produce a model; `exit_code` is the training process's status, `already_reported` says
    whether train.py printed the reason itself (its one-line `error: ...`)."""

    def __init__(self, message, exit_code=1, already_reported=False):
        super().__init__(message)
        self.exit_code = exit_code
        self.already_reported = already_reported


def training_data(config, *, progress=False):
    """(data folder, preset): the real set when it is there, else the synthetic set (made now if needed)."""
    data = load(config, DataSettings)
    if download.is_complete(data.dir) or (data.dir / "train").is_dir():
        return data.dir, None
    log.warning("%s not found (run `invoke data` to download it): training on the synthetic set in %s",
                data.dir, data.synthetic_dir)
    synthetic.make_synthetic_dataset(data.synthetic_dir, progress=progress)
    return data.synthetic_dir, SYNTHETIC_PRESET


def train_command(train, *, data, chosen, preset=None, workers=1, fresh=False, tracking=None):
    """The command line that trains (python train.py ..., or torchrun with `workers` processes) with the paths of
    `train` (TrainSettings), the MLflow store and experiment of `tracking` (TrackingSettings; default: the declared
    ones) and the `chosen` hyperparameters; a preset they name replaces the synthetic one.

    MLFLOW_TRACKING_URI, when set (a team's tracking server), wins over the store, as it does for every MLflow tool:
    train_command passes it to train.py."""
    tracking = tracking or TrackingSettings()
    workers = int(workers)
    if workers < 1:
        raise LocalTrainingError(f"workers must be at least 1, got {workers}")
    launcher = [sys.executable]
    if workers > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}"]
    args = ["--data", str(data), "--model-dir", str(train.model_dir), "--output-dir", str(train.output_dir),
            "--checkpoint-dir", str(train.checkpoint_dir), "--archive", str(train.archive),
            "--experiment", tracking.experiment]
    args += ["--tracking-uri", project_tracking_uri(tracking)]
    if preset and "preset" not in chosen:
        args += ["--preset", preset]
    if fresh:
        args.append("--no-resume")
    return launcher + [str(TRAIN_SCRIPT)] + args + hyperparameters.as_flags(chosen)


def train_locally(config, *, workers=1, fresh=False, assignments=(), progress=None):
    """Train with the configured paths and hyperparameters (train.hyperparameters, then `assignments`, the task's
    --set); returns the model directory (model.tar.gz is written as well)."""
    progress = sys.stderr.isatty() if progress is None else progress
    train = load(config, TrainSettings)
    chosen = hyperparameters.from_settings(train, assignments)     # a bad one stops here, before any work
    data, preset = training_data(config, progress=progress)
    if int(workers) > 1:
        # torchrun would wrap each process's one-line error in its own report; check the data first instead
        try:
            scan_data(data)
        except DataError as error:
            raise LocalTrainingError(f"error: {error}", 2) from None
    command = train_command(train, data=data, chosen=chosen, preset=preset, workers=workers, fresh=fresh,
                            tracking=load(config, TrackingSettings))
    log.info("running %s", shlex.join(command))
    result = subprocess.run(command)
    if result.returncode != 0:
        raise LocalTrainingError(f"training exited with status {result.returncode}", result.returncode,
                                 already_reported=result.returncode == 2)
    return train.model_dir


def has_model(model_dir):
    model_dir = Path(model_dir)
    return all((model_dir / name).exists() for name in (WEIGHTS_FILE, CONFIG_FILE, CODE_DIR))


def ensure_model(config, *, progress=None):
    """The model directory and its model.tar.gz, training one (synthetic preset offline) only when missing."""
    train = load(config, TrainSettings)
    if not has_model(train.model_dir):
        train_locally(config, progress=progress)
    elif not train.archive.exists():
        build_model_archive(train.model_dir, train.archive)
    return train.model_dir
