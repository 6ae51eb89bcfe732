"""Train the image classifier: one script for local runs, torchrun, SageMaker and the EC2 host.

    python training/train.py --data data/dogImages --arch resnet50 --weights imagenet --mode head
    torchrun --standalone --nproc-per-node 2 training/train.py --data data/synthetic --preset synthetic-cpu

Writes the model directory (model.pth, model_config.json, code/), and in the output directory metrics.json,
training_curve.png and the evaluation report on the test split (evaluation/); a checkpoint every epoch (a run
that finds one resumes from it; SIGTERM saves one).

The shape of torchvision's reference script: `get_args_parser()`, `main(args)`, and an epoch loop of train,
evaluate, checkpoint. The ways to train are in trainers.py behind one interface, the state that checkpoints
itself in checkpointing.py, the metric line SageMaker reads in metric_lines.py.
"""

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    # The script entry. SageMaker and the EC2 host run training/train.py from a staged source folder (training/ beside
    # inference/, nothing installed), torchrun and local runs from the repository: this is the one place training puts
    # that folder, and its inference/ (see pyproject.toml), on sys.path. The work then runs in the module
    # training.train, so that nothing is defined twice (once in __main__).
    _root = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(_root), str(_root / "inference")]
    from training.train import cli
    sys.exit(cli())

import torch  # noqa: E402

from architectures import ARCHITECTURES, WEIGHT_CHOICES, WeightsUnavailableError, build_model  # noqa: E402
from training.checkpointing import (CheckpointMismatch, TrainingInterrupted, TrainingState,  # noqa: E402
                                    read_checkpoint, remove_checkpoints)
from training.decoded_images import fits_in_memory, stored_bytes  # noqa: E402
from training.distributed_env import setup_distributed, setup_logging, teardown_distributed  # noqa: E402
from training.evaluation_report import REPORT_DIR, predict_test_split, write_evaluation_report  # noqa: E402
from training.imagefolder_data import DataError, scan_data  # noqa: E402
from training.metric_lines import SPLITS, epoch_line, flat_metrics  # noqa: E402
from training.model_archive import build_model_archive, write_model_dir  # noqa: E402
from training.tracking import DEFAULT_EXPERIMENT, TrackingError, open_run, output_store_uri  # noqa: E402
from training.trainers import Run, StopRequested, Sums, make_trainer  # noqa: E402
from training.training_curve import write_training_curve  # noqa: E402

log = logging.getLogger("train")

MODES = ("head", "finetune")
IMAGE_CACHE_CHOICES = ("auto", "memory", "off")
INTERRUPTED_EXIT_CODE = 128 + signal.SIGTERM

# Named sets of defaults; flags given on the command line still win. `synthetic-cpu` is what `invoke train` and
# `invoke deploy` use on the generated data set when the real one is absent: sized for 2 CPU cores.
PRESETS = {
    "synthetic-cpu": {"arch": "resnet18", "weights": "none", "mode": "finetune", "image_size": 96, "epochs": 8,
                      "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "patience": 4, "num_workers": 0},
}


class UsageError(Exception):
    """A problem the user fixes (bad flags, data, missing weights, foreign checkpoint): one line, no traceback."""


def _sagemaker_default(name, fallback):
    return os.environ.get(name) or fallback


SAGEMAKER_FEATURE_CACHE = "/opt/ml/input/feature-cache"


def _on_sagemaker():
    return "SM_MODEL_DIR" in os.environ or "SM_TRAINING_ENV" in os.environ


def _add_folder_flags(add):
    """Where the data is read and everything is written (SageMaker's environment gives the defaults there)."""
    data_default = (os.environ.get("SM_CHANNEL_TRAINING") or os.environ.get("SM_CHANNEL_TRAIN")
                    or "data/dogImages")
    # On SageMaker, a folder per training job: the jobs of a tuning job share one checkpoint S3 URI, which SageMaker
    # syncs with /opt/ml/checkpoints, so each job resumes from and writes to <uri>/<its own name>/ only.
    checkpoint_default = (os.path.join("/opt/ml/checkpoints", os.environ.get("TRAINING_JOB_NAME", "")).rstrip("/")
                          if _on_sagemaker() else "build/checkpoints")
    add("--data", "--data-dir", "--data_dir", dest="data", default=data_default,
        help="ImageFolder root with train/ and valid/ (SM_CHANNEL_TRAINING on SageMaker)")
    add("--model-dir", "--model_dir", dest="model_dir", default=_sagemaker_default("SM_MODEL_DIR", "build/model"),
        help="where the model directory is written (SM_MODEL_DIR on SageMaker)")
    add("--output-dir", "--output_dir", "--output-data-dir", "--output_data_dir", dest="output_dir",
        default=_sagemaker_default("SM_OUTPUT_DATA_DIR", "build/output"),
        help="metrics.json and training_curve.png (SM_OUTPUT_DATA_DIR on SageMaker)")
    add("--checkpoint-dir", "--checkpoint_dir", dest="checkpoint_dir", default=checkpoint_default,
        help="checkpoints, every epoch; a run resumes from the one it finds here (on SageMaker "
             "/opt/ml/checkpoints/<TRAINING_JOB_NAME>, which SageMaker syncs to <CheckpointConfig URI>/<job name>/)")
    # Not under the checkpoint folder on SageMaker: a tuning job's CheckpointConfig URI is shared by its jobs, and
    # SageMaker copies all of it into every job it starts, so each would download its siblings' feature caches.
    add("--feature-cache-dir", "--feature_cache_dir", dest="feature_cache_dir",
        default=SAGEMAKER_FEATURE_CACHE if _on_sagemaker() else "",
        help="head mode: where backbone features are cached (empty: <checkpoint-dir>/features; on SageMaker "
             f"{SAGEMAKER_FEATURE_CACHE}, which SageMaker does not sync)")
    add("--archive", default="", help="also write model.tar.gz of the model directory here (empty: do not)")
    add("--tracking-uri", "--tracking_uri", dest="tracking_uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""),
        help="the MLflow tracking URI rank 0 logs the run to (default: MLFLOW_TRACKING_URI; empty: a SQLite store in "
             "<output-dir>/mlflow, which the output keeps)")
    add("--experiment", default=os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT,
        help="the MLflow experiment of the run (default: MLFLOW_EXPERIMENT_NAME, else dog-breeds)")


def get_args_parser():
    parser = argparse.ArgumentParser(
        description="Train an image classifier on an ImageFolder data set (train/ valid/ [test/]).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--preset", choices=sorted(PRESETS), default=None,
        help="a named set of defaults (explicit flags still win); synthetic-cpu: ResNet-18 fine-tuning at 96 px")
    _add_folder_flags(add)
    add("--arch", choices=ARCHITECTURES, default="resnet50", help="backbone")
    add("--weights", choices=WEIGHT_CHOICES, default="imagenet",
        help="backbone initialisation: torchvision ImageNet weights or random")
    add("--mode", choices=MODES, default="head",
        help="head: train the head on a frozen backbone (features cached); finetune: the whole network, augmented")
    add("--epochs", type=int, default=10, help="maximum number of epochs")
    add("--batch-size", "--batch_size", dest="batch_size", type=int, default=64,
        help="global batch size, split evenly over distributed processes")
    add("--lr", "--learning-rate", "--learning_rate", dest="lr", type=float, default=1e-3,
        help="AdamW learning rate (cosine-annealed over the epochs)")
    add("--weight-decay", "--weight_decay", dest="weight_decay", type=float, default=1e-4, help="AdamW weight decay")
    add("--patience", type=int, default=3,
        help="stop after this many epochs without a lower valid loss (0: never stop early)")
    add("--image-size", "--image_size", dest="image_size", type=int, default=224, help="input size in pixels")
    add("--seed", type=int, default=0, help="random seed (same seed, same data, same flags: same result)")
    add("--num-workers", "--num_workers", dest="num_workers", type=int, default=-1,
        help="data loader worker processes per training process (-1: automatic; with a GPU the process's share "
             "of the cores, up to 16, on CPU half of it, up to 4)")
    add("--threads", type=int, default=0,
        help="CPU threads per process (0: torch's default, or cores / processes under torchrun)")
    add("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when available")
    add("--image-cache", "--image_cache", dest="image_cache", choices=IMAGE_CACHE_CHOICES, default="auto",
        help="finetune: memory decodes the images once into device memory and augments them there in batches; "
             "off decodes every epoch in loader workers; auto is memory on a GPU when they fit, else off")
    add("--compile", action="store_true", help="finetune: torch.compile the network (minutes to compile, faster "
                                                "steps after; worth it for long GPU runs)")
    add("--no-resume", "--no_resume", dest="resume", action="store_false",
        help="ignore and replace any checkpoint in --checkpoint-dir instead of resuming from it")
    add("--verbose", action="store_true", help="debug logging")
    return parser


def parse_args(argv=None):
    """Parse `argv`, with the chosen preset's values as defaults under the explicit flags."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.preset:
        parser.set_defaults(**PRESETS[args.preset])
        args = parser.parse_args(argv)
    return args


def _check_args(args):
    for name in ("epochs", "batch_size", "image_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.lr <= 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.patience < 0 or args.num_workers < -1 or args.threads < 0:
        raise UsageError("--patience and --threads cannot be negative, --num-workers is -1 (automatic) or more")


def _fingerprint(args, data):
    """What a checkpoint must match to be resumed: every setting that changes the result, and the data."""
    settings = {name: getattr(args, name) for name in
                ("arch", "weights", "mode", "epochs", "batch_size", "lr", "weight_decay", "image_size", "seed")}
    if args.mode == "finetune":
        settings["image_cache"] = args.image_cache    # the two data paths draw different augmentations
    settings["classes"] = data.class_folders
    settings["samples"] = {name: len(split) for name, split in data.splits.items()}
    return settings


def _device(choice):
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available: use --device cpu or auto")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def main(args):
    """Train as `args` say; returns the final metrics (also in <output-dir>/metrics.json)."""
    _check_args(args)
    args.tracking_uri = args.tracking_uri or output_store_uri(args.output_dir)
    device_type = _device(args.device)
    env = setup_distributed(device_type)
    setup_logging(env, args.verbose)
    try:
        return _train(args, env, device_type)
    finally:
        teardown_distributed(env)


def _train(args, env, device_type):
    started = time.perf_counter()
    device = _configure_device(args, env, device_type)
    try:
        data = scan_data(args.data)
    except DataError as error:
        raise UsageError(str(error)) from None
    log.info("data %s: %d classes, %s; %d process(es), %d thread(s) each, device %s", data.root,
             len(data.class_names), ", ".join(f"{n} {len(s)}" for n, s in data.splits.items()), env.world_size,
             torch.get_num_threads(), device)
    if args.mode == "finetune":
        args.image_cache = _resolve_image_cache(args.image_cache, data, env, device, args.image_size)
    model = _build_model(args, env, device, len(data.class_names))
    fingerprint = _fingerprint(args, data)
    checkpoint = _checkpoint_to_resume(args, env, fingerprint)
    run = Run(args, env, device, data, model)
    with run.stop:
        trainer = make_trainer(run)
        optimizer = torch.optim.AdamW(trainer.parameters, lr=args.lr, weight_decay=args.weight_decay, fused=True)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
        state = TrainingState(trainer.model, optimizer, scheduler, args, fingerprint, trainer.backbone_digest)
        if checkpoint is not None:
            _resume(state, checkpoint, env)
        with _open_tracking(args, env, data, state) as tracking:
            while not state.finished and state.epoch < args.epochs:
                _train_and_evaluate_epoch(run, trainer, state, tracking)
            return _write_results(run, trainer, state, started, tracking)


def _open_tracking(args, env, data, state):
    """The MLflow run (rank 0): the checkpoint's run when resuming, with the epochs it lacks logged now."""
    try:
        tracking = open_run(args, env, data, state.history, resume_run_id=state.tracking_run_id,
                            interruptions=(TrainingInterrupted, KeyboardInterrupt))
    except TrackingError as error:
        raise UsageError(str(error)) from None
    state.tracking_run_id = tracking.run_id
    return tracking


def _configure_device(args, env, device_type):
    """The process's device; its thread count, the loader workers (of --num-workers -1) and cuDNN set for it."""
    threads = args.threads or (max(1, (os.cpu_count() or 1) // env.local_world_size) if env.enabled else 0)
    if threads:
        torch.set_num_threads(threads)
    if args.num_workers < 0:
        cores = max(1, (os.cpu_count() or 1) // env.local_world_size)
        args.num_workers = min(16, cores) if device_type == "cuda" else min(4, cores // 2)
    if device_type == "cuda":
        torch.backends.cudnn.benchmark = True
        return torch.device(device_type, env.local_rank)
    return torch.device("cpu")


def _build_model(args, env, device, num_classes):
    torch.manual_seed(args.seed)          # the same initial weights on every rank
    try:
        model = build_model(args.arch, num_classes, args.weights)
    except WeightsUnavailableError as error:
        raise UsageError(str(error)) from None
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    torch.manual_seed(args.seed + env.rank)   # dropout differs between ranks
    return model


def _checkpoint_to_resume(args, env, fingerprint):
    """The checkpoint in --checkpoint-dir this run goes on from, or None (--no-resume removes it)."""
    if not args.resume:
        if env.is_main:
            remove_checkpoints(args.checkpoint_dir)
        return None
    try:
        return read_checkpoint(args.checkpoint_dir, fingerprint)
    except CheckpointMismatch as error:
        raise UsageError(str(error)) from None


def _resume(state, checkpoint, env):
    try:
        state.restore(checkpoint, env)
    except CheckpointMismatch as error:
        raise UsageError(str(error)) from None
    where = (f"epoch {state.in_progress['epoch']} batch {state.in_progress['batch']}"
             if state.in_progress else f"the end of epoch {state.epoch}")
    log.info("resuming from the checkpoint in %s at %s", state.args.checkpoint_dir, where)


def _train_and_evaluate_epoch(run, trainer, state, tracking):
    """One epoch: train (from where SIGTERM stopped it, if it did), evaluate, log, checkpoint."""
    env, epoch = run.env, state.epoch + 1
    epoch_started = time.perf_counter()
    resume_point, state.in_progress = state.in_progress, None
    start_batch, sums = (resume_point["batch"], Sums(resume_point["sums"])) if resume_point else (0, Sums())
    lr = state.optimizer.param_groups[0]["lr"]
    try:
        sums = trainer.train_epoch(epoch, state.optimizer, start_batch, sums)
    except StopRequested as stop:
        path = state.save(env, in_progress={"epoch": epoch, "batch": stop.batch, "sums": stop.sums.values})
        if env.is_main:
            log.warning("SIGTERM: saved %s at epoch %d batch %d; run again to resume", path, epoch, stop.batch)
        raise TrainingInterrupted() from None
    state.scheduler.step()
    split_metrics = {"train": sums.metrics(env, run.device)}     # waits for the device to finish the epoch
    train_seconds = time.perf_counter() - epoch_started
    state.samples_per_rank = [int(n) for n in env.gather(sums.values[3])]
    for split in SPLITS[1:]:
        if split in run.data.splits:
            split_metrics[split] = trainer.evaluate(split)
    seconds = time.perf_counter() - epoch_started
    # images/s of this epoch's training steps over all ranks (of a resumed epoch: of the part run here)
    trained = sum(state.samples_per_rank) - (resume_point["sums"][3] * env.world_size if resume_point else 0)
    throughput = trained / max(train_seconds, 1e-9)
    log.info("%s", epoch_line(epoch, split_metrics, lr, seconds, throughput))
    state.end_epoch({"epoch": epoch, "lr": lr, "epoch_seconds": round(seconds, 3),
                     "images_per_second": round(throughput, 1), **flat_metrics(split_metrics)},
                    split_metrics["valid"]["loss"])
    state.save(env)
    tracking.log_epochs(state.history[-1:])
    if run.should_stop():       # every rank at once: the flag of one is not the others'
        if env.is_main:
            log.warning("SIGTERM: checkpoint of epoch %d saved; run again to resume", epoch)
        raise TrainingInterrupted()


def _write_results(run, trainer, state, started, tracking):
    """The best epoch's model directory (and archive), the evaluation report, metrics.json and the training
    curve, logged to the MLflow run with the output folder."""
    args, env = run.args, run.env
    best = state.load_best()
    predictions = predict_test_split(trainer, run.data, env)      # every rank's test shard, on rank 0
    final = {"best_epoch": state.best_epoch, "epochs_run": state.epoch,
             **{k: v for k, v in best.items() if k.split("_")[0] in SPLITS}}
    log.info("best_epoch=%d %s", state.best_epoch,
             " ".join(f"{k}={v:.4f}" for k, v in final.items() if k.startswith(("valid_", "test_"))))
    report = {"final": final, "history": state.history, "world_size": env.world_size,
              "train_samples_per_rank": state.samples_per_rank, "class_names": run.data.class_names,
              "elapsed_seconds": round(time.perf_counter() - started, 2),
              "settings": dict(vars(args)), **trainer.figures(), "mlflow": tracking.record,
              "dataset": tracking.dataset}   # the data's fingerprint: the model registry records it with the version
    if env.is_main:
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        written = [output_dir / "metrics.json", output_dir / "training_curve.png", output_dir / REPORT_DIR]
        if predictions is not None:
            report["evaluation"] = write_evaluation_report(output_dir, predictions, run.data, args.image_size)
        else:   # an earlier run's report in the same output folder would read as this run's
            shutil.rmtree(written[-1], ignore_errors=True)
        written[0].write_text(json.dumps(report, indent=2, default=str) + "\n")
        write_training_curve(state.history, written[1])
        config = write_model_dir(args.model_dir, run.model, arch=args.arch, class_names=run.data.class_names,
                                 image_size=args.image_size, weights=args.weights, mode=args.mode, metrics=final)
        log.info("model %s written to %s", config["model_version"], args.model_dir)
        if args.archive:
            log.info("archive written to %s", build_model_archive(args.model_dir, args.archive))
        tracking.finish(report, written, args.model_dir)
    env.barrier()
    return report


def _resolve_image_cache(choice, data, env, device, image_size):
    """`auto` becomes `memory` when this rank's share of the images fits its device's memory share, else `off`."""
    if choice != "auto":
        return choice
    train = math.ceil(len(data.splits["train"]) / env.world_size)
    evaluated = sum(math.ceil(len(split) / env.world_size) for name, split in data.splits.items() if name != "train")
    needed = stored_bytes(train, evaluated, image_size)
    fits = fits_in_memory(needed, device)
    if device.type == "cuda":
        log.info("--image-cache auto: %.1f GB of decoded images %s device memory", needed / 1e9,
                 "fit in" if fits else "do not fit in; decoding every epoch instead of keeping them in")
    return "memory" if fits else "off"


def cli(argv=None):
    args = parse_args(argv)
    try:
        main(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingInterrupted:
        return INTERRUPTED_EXIT_CODE
    return 0
