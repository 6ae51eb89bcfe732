"""Train the image classifier: one script for local runs, torchrun, SageMaker and the EC2 host.

    python training/train.py --data data/dogImages --arch resnet50 --weights imagenet --mode head
    torchrun --standalone --nproc-per-node 2 training/train.py --data data/synthetic --preset synthetic-cpu

Writes the model directory (model.pth, model_config.json, code/), metrics.json and training_curve.png in the
output directory, and a checkpoint every epoch (a run that finds one resumes from it; SIGTERM saves one).
"""

import argparse
import copy
import json
import logging
import math
import os
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
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
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

import preprocessing  # noqa: E402
from architectures import ARCHITECTURES, WEIGHT_CHOICES, WeightsUnavailableError, build_model  # noqa: E402
from training.checkpointing import (CheckpointMismatch, TrainingInterrupted, load_checkpoint,  # noqa: E402
                                    remove_checkpoints, rng_state, save_checkpoint, set_rng_state)
from training.decoded_images import decode_shard, fits_in_memory, stored_bytes  # noqa: E402
from training.distributed_env import data_parallel, setup_distributed, setup_logging, teardown_distributed  # noqa: E402
from training.feature_cache import backbone_digest, cache_key, cached_features, extract_features  # noqa: E402
from training.imagefolder_data import DataError, ImageSamples, collate_skipping_bad, scan_data  # noqa: E402
from training.model_archive import build_model_archive, write_model_dir  # noqa: E402
from training.training_curve import write_training_curve  # noqa: E402

log = logging.getLogger("train")

MODES = ("head", "finetune")
IMAGE_CACHE_CHOICES = ("auto", "memory", "off")
SPLIT_METRICS = ("loss", "accuracy", "top5_accuracy")
INTERRUPTED_EXIT_CODE = 128 + signal.SIGTERM
SAME_AS_MODEL = "same-as-model"     # checkpoint's best_model when the best epoch is the latest

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


def get_args_parser():
    data_default = (os.environ.get("SM_CHANNEL_TRAINING") or os.environ.get("SM_CHANNEL_TRAIN")
                    or "data/dogImages")
    # On SageMaker, a folder per training job: the jobs of a tuning job share one checkpoint S3 URI, which SageMaker
    # syncs with /opt/ml/checkpoints, so each job resumes from and writes to <uri>/<its own name>/ only.
    checkpoint_default = (os.path.join("/opt/ml/checkpoints", os.environ.get("TRAINING_JOB_NAME", "")).rstrip("/")
                          if _on_sagemaker() else "build/checkpoints")
    parser = argparse.ArgumentParser(
        description="Train an image classifier on an ImageFolder data set (train/ valid/ [test/]).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--preset", choices=sorted(PRESETS), default=None,
        help="a named set of defaults (explicit flags still win); synthetic-cpu: ResNet-18 fine-tuning at 96 px")
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


class StopFlag:
    """Set by SIGTERM (SageMaker spot reclaim, scale-in, torchrun shutting down, `kill`)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def install(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:   # not the main thread: nobody can deliver SIGTERM to us there anyway
            self._previous = None

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame):
        self.requested = True


class Sums:
    """Loss and hit counts of one split, summed over samples (and over ranks once reduced).

    Batches are added up on the device and read back only when asked, so a GPU is not stalled every step.
    """

    def __init__(self, values=None):
        self._values = list(values) if values else [0.0, 0.0, 0.0, 0.0]   # loss, top-1 hits, top-5 hits, samples
        self._pending = None

    @property
    def values(self):
        if self._pending is not None:
            self._values = [a + b for a, b in zip(self._values, self._pending.tolist())]
            self._pending = None
        return self._values

    def add(self, logits, labels):
        with torch.no_grad():
            logits = logits.float()
            k = min(5, logits.shape[1])
            hits = logits.topk(k, dim=1).indices.eq(labels.unsqueeze(1))
            # new_full, not torch.tensor(..., device=...): a copy from the host would wait for the GPU every step
            batch = torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                                 hits[:, 0].sum().double(), hits.any(dim=1).sum().double(),
                                 logits.new_full((), labels.numel(), dtype=torch.float64)])
            self._pending = batch if self._pending is None else self._pending + batch

    def metrics(self, env, device):
        loss, top1, top5, count = env.sum(self.values, device)
        count = max(count, 1.0)
        return {"loss": loss / count, "accuracy": top1 / count, "top5_accuracy": top5 / count, "samples": int(count)}


class Run:
    """State shared by both modes: process group, device, data, model, SIGTERM flag, batch size per rank."""

    def __init__(self, args, env, device, data, model):
        self.args, self.env, self.device, self.data, self.model = args, env, device, data, model
        self.stop = StopFlag()
        self.amp = device.type == "cuda"
        self.channels_last = device.type == "cuda"
        self.per_rank_batch = max(1, args.batch_size // env.world_size)
        if self.per_rank_batch * env.world_size != args.batch_size:
            log.warning("--batch-size %d is not a multiple of %d processes: each process takes %d",
                        args.batch_size, env.world_size, self.per_rank_batch)
        self.show_progress = env.is_main and sys.stderr.isatty()

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()

    def should_stop(self):
        """SIGTERM on any rank stops every rank at the same batch (so no rank waits in an all-reduce)."""
        if not self.env.enabled:
            return self.stop.requested
        return self.env.max(1.0 if self.stop.requested else 0.0, self.device) > 0

    def shard(self, count):
        """Indices this rank evaluates: every world_size-th sample from its rank on, nothing repeated."""
        return list(range(self.env.rank, count, self.env.world_size))

    def loader(self, dataset, indices):
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.per_rank_batch, sampler=indices, num_workers=self.args.num_workers,
            collate_fn=collate_skipping_bad, pin_memory=self.device.type == "cuda",
            # its own generator: creating an iterator must not draw from the global RNG that dropout uses,
            # or a run resumed mid-epoch would see a different random stream than an uninterrupted one
            generator=torch.Generator().manual_seed(self.args.seed))


@contextmanager
def one_thread(enabled=True):
    """Run small CPU work (the head on cached features) on one thread: splitting a 64x512 matrix product over
    threads costs more in synchronisation than it saves, 10x more on a busy machine."""
    previous = torch.get_num_threads()
    if enabled:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _epoch_order(length, world_size, rank, seed, epoch):
    """This rank's training order for `epoch`: DistributedSampler's shuffle and padding, as a plain list."""
    sampler = torch.utils.data.DistributedSampler(range(length), num_replicas=world_size, rank=rank,
                                                  shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return list(sampler)


def _shard_order(count, steps_length, seed, epoch, rank):
    """This rank's order over its fixed shard for `epoch`, padded (wrapping around) to `steps_length`, the
    largest shard, so that every rank takes the same number of steps."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + rank)
    order = torch.randperm(count, generator=generator)
    if count and len(order) < steps_length:
        order = order.repeat(math.ceil(steps_length / count))[:steps_length]
    return order


def _wrap_for_training(run, module):
    network = data_parallel(module, run.env, run.device)
    return torch.compile(network) if run.args.compile else network


def _train_step(run, network, optimizer, images, labels, sums):
    """One optimisation step of the whole network on a batch already on the device."""
    if run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with run.autocast():
        logits = network(images)
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    sums.add(logits, labels)


def _evaluate_batch(run, module, images, labels, sums):
    if run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with run.autocast():
        sums.add(module(images), labels)


class FinetuneTrainer:
    """The whole network, trained on augmented images; images are decoded every epoch."""

    def __init__(self, run):
        self.run = run
        args = run.args
        self.train_set = ImageSamples(run.data.splits["train"].samples,
                                      preprocessing.train_transform(args.image_size), seed=args.seed,
                                      min_side=preprocessing.decode_side(args.image_size, for_training=True))
        self.eval_sets = {name: ImageSamples(split.samples, preprocessing.eval_transform(args.image_size),
                                             min_side=preprocessing.decode_side(args.image_size))
                          for name, split in run.data.splits.items()}
        self.module = run.model
        self.trained = run.model      # what checkpoints hold
        self.network = _wrap_for_training(run, run.model)
        self.parameters = [p for p in run.model.parameters() if p.requires_grad]

    def batches_per_epoch(self):
        run = self.run
        order = _epoch_order(len(self.train_set), run.env.world_size, run.env.rank, run.args.seed, 0)
        return math.ceil(len(order) / run.per_rank_batch)

    def train_epoch(self, epoch, optimizer, start_batch, sums, on_interrupt):
        run = self.run
        self.network.train()
        self.train_set.epoch = epoch
        order = _epoch_order(len(self.train_set), run.env.world_size, run.env.rank, run.args.seed, epoch)
        batches = run.loader(self.train_set, order[start_batch * run.per_rank_batch:])
        total = math.ceil(len(order) / run.per_rank_batch)
        bar = tqdm(total=total, initial=start_batch, desc=f"epoch {epoch} train", disable=not run.show_progress,
                   leave=False)
        for batch_number, batch in enumerate(batches, start=start_batch):
            # Batch norm cannot train on a single image (a last batch of 1, or a batch of unreadable images);
            # every rank skips the step together so no rank waits for the others' gradients. One collective
            # carries that and SIGTERM, so all ranks also stop at the same batch.
            unusable = 1.0 if batch is None or len(batch[1]) < 2 else 0.0
            stop = 1.0 if run.stop.requested else 0.0
            if run.env.enabled:
                unusable, stop = run.env.sum([unusable, stop], run.device)
            if stop:
                on_interrupt(batch_number, sums)
            if unusable:
                log.warning("epoch %d batch %d skipped: fewer than 2 readable images on a process",
                            epoch, batch_number)
                bar.update()
                continue
            images, labels, _ = batch
            _train_step(run, self.network, optimizer, images.to(run.device, non_blocking=True),
                        labels.to(run.device, non_blocking=True), sums)
            bar.update()
        bar.close()
        return sums

    @torch.inference_mode()
    def evaluate(self, split):
        run = self.run
        self.module.eval()
        dataset = self.eval_sets[split]
        sums = Sums()
        for batch in run.loader(dataset, run.shard(len(dataset))):
            if batch is None:
                continue
            images, labels, _ = batch
            _evaluate_batch(run, self.module, images.to(run.device, non_blocking=True), labels.to(run.device), sums)
        return sums.metrics(run.env, run.device)


class InMemoryFinetuneTrainer:
    """The whole network, on images decoded once into device memory and augmented there in batches.

    Like head mode's features, each rank keeps a fixed shard (every world_size-th image) and shuffles it per epoch.
    """

    EVAL_BATCH = 256

    def __init__(self, run):
        self.run = run
        args, env = run.args, run.env
        started = time.perf_counter()
        self.stored = {}
        for split_name, split in run.data.splits.items():
            self.stored[split_name] = decode_shard(
                split.samples, run.shard(len(split)), image_size=args.image_size,
                for_training=split_name == "train", num_workers=args.num_workers, device=run.device,
                should_stop=lambda: run.stop.requested,
                progress_label=f"{split_name} images" if run.show_progress else None)
        if run.should_stop():
            raise TrainingInterrupted()
        self.decode_seconds = time.perf_counter() - started
        log.info("images decoded into %s memory in %.1f s: %s", run.device.type, self.decode_seconds,
                 ", ".join(f"{name} {len(images)}" for name, images in self.stored.items()))
        self.module = run.model
        self.trained = run.model
        self.network = _wrap_for_training(run, run.model)
        self.parameters = [p for p in run.model.parameters() if p.requires_grad]
        self.steps_length = int(env.max(len(self.stored["train"]), run.device))
        self.generator = torch.Generator(device=run.device)

    def batches_per_epoch(self):
        return math.ceil(self.steps_length / self.run.per_rank_batch)

    def train_epoch(self, epoch, optimizer, start_batch, sums, on_interrupt):
        run, args, train = self.run, self.run.args, self.stored["train"]
        self.network.train()
        order = _shard_order(len(train), self.steps_length, args.seed, epoch, run.env.rank).to(run.device)
        step = run.per_rank_batch
        bar = tqdm(total=self.batches_per_epoch(), initial=start_batch, desc=f"epoch {epoch} train",
                   disable=not run.show_progress, leave=False)
        for batch_number in range(start_batch, self.batches_per_epoch()):
            if run.should_stop():
                on_interrupt(batch_number, sums)
            picked = order[batch_number * step:(batch_number + 1) * step]
            bar.update()
            if len(picked) < 2:    # batch norm cannot train on one image; every rank has the same batch count
                continue
            # seeded per batch, so a run resumed mid-epoch draws the same augmentation as an uninterrupted one
            self.generator.manual_seed(args.seed * 1_000_003 + epoch * 10_007 + batch_number * 101 + run.env.rank)
            images = preprocessing.augment_batch(train.images[picked], train.source_sizes[picked], args.image_size,
                                                 self.generator)
            _train_step(run, self.network, optimizer, images, train.labels[picked], sums)
        bar.close()
        return sums

    @torch.inference_mode()
    def evaluate(self, split):
        run = self.run
        self.module.eval()
        stored = self.stored[split]
        sums = Sums()
        for start in range(0, len(stored), self.EVAL_BATCH):
            images = preprocessing.normalize_batch(stored.images[start:start + self.EVAL_BATCH])
            _evaluate_batch(run, self.module, images, stored.labels[start:start + self.EVAL_BATCH], sums)
        return sums.metrics(run.env, run.device)


class HeadTrainer:
    """Frozen backbone: its features are computed once per split (cached), then only the head trains on them."""

    def __init__(self, run):
        self.run = run
        args, env = run.args, run.env
        model = run.model
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(False)
        model.backbone.eval()
        if run.channels_last:
            model.backbone.to(memory_format=torch.channels_last)
        cache_dir = args.feature_cache_dir or os.path.join(args.checkpoint_dir, "features")
        digest = backbone_digest(model.backbone)
        identity = run.data.identity()
        started = time.perf_counter()
        self.features = {}
        for split_name, split in run.data.splits.items():
            files = [entry for entry in identity["files"] if entry[0] == split_name]
            key = cache_key(args.arch, digest, args.image_size, files)
            indices = run.shard(len(split))

            def compute(split=split, indices=indices, split_name=split_name):
                return extract_features(
                    model.backbone, split.samples, indices, image_size=args.image_size,
                    batch_size=max(run.per_rank_batch, 32), num_workers=args.num_workers, device=run.device,
                    autocast=run.autocast, channels_last=run.channels_last,
                    # shards may differ by a batch, so no collective here: torchrun signals every rank anyway
                    should_stop=lambda: run.stop.requested,
                    progress_label=f"{split_name} features" if run.show_progress else None)

            features, labels, _, _ = cached_features(cache_dir, key, split_name, env.rank, env.world_size, compute)
            self.features[split_name] = (features.to(run.device), labels.to(run.device))
        if run.should_stop():
            raise TrainingInterrupted()
        self.extraction_seconds = time.perf_counter() - started
        log.info("features of %s ready in %.1f s (feature size %d)",
                 ", ".join(f"{name}: {len(v[1])}" for name, v in self.features.items()), self.extraction_seconds,
                 self.features["train"][0].shape[1] if len(self.features["train"][0]) else 0)
        self.module = model.head
        # The backbone is rebuilt identically from arch, weights and seed, so checkpoints hold only the head
        # (kilobytes instead of the backbone's 45-100 MB every epoch) plus the backbone's digest as a guard.
        self.trained = model.head
        self.backbone_digest = digest
        self.network = data_parallel(model.head, env, run.device)
        self.parameters = list(model.head.parameters())
        # Every rank takes the same number of steps: shards are padded (wrapping around) to the largest one.
        self.steps_length = int(env.max(len(self.features["train"][1]), run.device))

    def batches_per_epoch(self):
        return math.ceil(self.steps_length / self.run.per_rank_batch)

    def train_epoch(self, epoch, optimizer, start_batch, sums, on_interrupt):
        with one_thread(self.run.device.type == "cpu"):
            return self._train_epoch(epoch, optimizer, start_batch, sums, on_interrupt)

    def _train_epoch(self, epoch, optimizer, start_batch, sums, on_interrupt):
        run = self.run
        self.network.train()
        features, labels = self.features["train"]
        order = _shard_order(len(labels), self.steps_length, run.args.seed, epoch, run.env.rank).to(run.device)
        step = run.per_rank_batch
        for batch_number in range(start_batch, self.batches_per_epoch()):
            if run.should_stop():
                on_interrupt(batch_number, sums)
            picked = order[batch_number * step:(batch_number + 1) * step]
            logits = self.network(features[picked])
            loss = F.cross_entropy(logits.float(), labels[picked])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums.add(logits, labels[picked])
        return sums

    @torch.inference_mode()
    def evaluate(self, split):
        run = self.run
        self.module.eval()
        features, labels = self.features[split]
        sums = Sums()
        with one_thread(run.device.type == "cpu"):
            for start in range(0, len(labels), 1024):
                sums.add(self.module(features[start:start + 1024]), labels[start:start + 1024])
        return sums.metrics(run.env, run.device)


def _format_metrics(epoch_metrics):
    parts = []
    for split in ("train", "valid", "test"):
        if split in epoch_metrics:
            parts += [f"{split}_{name}={epoch_metrics[split][name]:.4f}" for name in SPLIT_METRICS]
    return " ".join(parts)


def _flat(epoch, epoch_metrics, lr, seconds, images_per_second):
    row = {"epoch": epoch, "lr": lr, "epoch_seconds": round(seconds, 3),
           "images_per_second": round(images_per_second, 1)}
    for split, values in epoch_metrics.items():
        for name in SPLIT_METRICS:
            row[f"{split}_{name}"] = values[name]
    return row


def _device(choice):
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available: use --device cpu or auto")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def main(args):
    """Train as `args` say; returns the final metrics (also in <output-dir>/metrics.json)."""
    _check_args(args)
    device_type = _device(args.device)
    env = setup_distributed(device_type)
    setup_logging(env, args.verbose)
    try:
        return _train(args, env, device_type)
    finally:
        teardown_distributed(env)


def _train(args, env, device_type):
    started = time.perf_counter()
    device = torch.device(device_type, env.local_rank) if device_type == "cuda" else torch.device("cpu")
    threads = args.threads or (max(1, (os.cpu_count() or 1) // env.local_world_size) if env.enabled else 0)
    if threads:
        torch.set_num_threads(threads)
    if args.num_workers < 0:
        cores = max(1, (os.cpu_count() or 1) // env.local_world_size)
        args.num_workers = min(16, cores) if device_type == "cuda" else min(4, cores // 2)
    if device_type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        data = scan_data(args.data)
    except DataError as error:
        raise UsageError(str(error)) from None
    log.info("data %s: %d classes, %s; %d process(es), %d thread(s) each, device %s", data.root,
             len(data.class_names), ", ".join(f"{n} {len(s)}" for n, s in data.splits.items()), env.world_size,
             torch.get_num_threads(), device)

    if args.mode == "finetune":
        args.image_cache = _resolve_image_cache(args.image_cache, data, env, device, args.image_size)
    torch.manual_seed(args.seed)          # the same initial weights on every rank
    try:
        model = build_model(args.arch, len(data.class_names), args.weights)
    except WeightsUnavailableError as error:
        raise UsageError(str(error)) from None
    model.to(device)
    if device_type == "cuda":
        model.to(memory_format=torch.channels_last)
    torch.manual_seed(args.seed + env.rank)   # dropout differs between ranks

    fingerprint = _fingerprint(args, data)
    checkpoint = None
    if args.resume:
        try:
            checkpoint = load_checkpoint(args.checkpoint_dir)
        except CheckpointMismatch as error:
            raise UsageError(str(error)) from None
        if checkpoint is not None and checkpoint["fingerprint"] != fingerprint:
            changed = sorted(k for k in fingerprint if checkpoint["fingerprint"].get(k) != fingerprint[k])
            raise UsageError(f"the checkpoint in {args.checkpoint_dir} is from a run with other {', '.join(changed)}: "
                             f"pass --no-resume to start over (or use another --checkpoint-dir)")
    elif env.is_main:
        remove_checkpoints(args.checkpoint_dir)
    run = Run(args, env, device, data, model)
    run.stop.install()
    try:
        return _fit(run, checkpoint, fingerprint, started)
    finally:
        run.stop.restore()


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


def _fit(run, checkpoint, fingerprint, started):
    args, env, model = run.args, run.env, run.model
    if args.mode == "head":
        trainer = HeadTrainer(run)
    else:
        trainer = InMemoryFinetuneTrainer(run) if args.image_cache == "memory" else FinetuneTrainer(run)
    optimizer = torch.optim.AdamW(trainer.parameters, lr=args.lr, weight_decay=args.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)

    state = {"epoch": 0, "history": [], "best_epoch": 0, "best_valid_loss": math.inf, "best_model": None,
             "stale_epochs": 0, "in_progress": None, "finished": False, "samples_per_rank": []}
    if checkpoint is not None:
        if checkpoint.get("backbone_digest") != getattr(trainer, "backbone_digest", None):
            raise UsageError(f"the checkpoint in {args.checkpoint_dir} was trained on another backbone: "
                             f"pass --no-resume to start over")
        trainer.trained.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        for key in state:
            state[key] = checkpoint[key]
        if state["best_model"] == SAME_AS_MODEL:
            state["best_model"] = checkpoint["model"]
        ranks_rng = checkpoint["rng"]
        if len(ranks_rng) == env.world_size:
            set_rng_state(ranks_rng[env.rank])
        else:
            log.warning("checkpoint was written by %d process(es), this run has %d: random state not restored",
                        len(ranks_rng), env.world_size)
        where = (f"epoch {state['in_progress']['epoch']} batch {state['in_progress']['batch']}"
                 if state["in_progress"] else f"the end of epoch {state['epoch']}")
        log.info("resuming from the checkpoint in %s at %s", args.checkpoint_dir, where)

    def checkpoint_state(in_progress):
        rngs = env.gather(rng_state())
        # When the epoch just finished is the best one, its weights are stored once, not twice.
        best_is_current = in_progress is None and state["best_epoch"] == state["epoch"]
        return {"fingerprint": fingerprint, "model": trainer.trained.state_dict(),
                "backbone_digest": getattr(trainer, "backbone_digest", None),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rngs,
                "args": vars(args), **{**state, "in_progress": in_progress},
                **({"best_model": SAME_AS_MODEL} if best_is_current else {})}

    def on_interrupt(batch_number, sums):
        snapshot = checkpoint_state({"epoch": epoch, "batch": batch_number, "sums": sums.values})
        if env.is_main:
            path = save_checkpoint(args.checkpoint_dir, snapshot)
            log.warning("SIGTERM: saved %s at epoch %d batch %d; run again to resume", path, epoch, batch_number)
        raise TrainingInterrupted()

    epoch = state["epoch"]
    while not state["finished"] and epoch < args.epochs:
        epoch = state["epoch"] + 1
        epoch_started = time.perf_counter()
        resume_point = state["in_progress"]
        start_batch, sums = (resume_point["batch"], Sums(resume_point["sums"])) if resume_point else (0, Sums())
        state["in_progress"] = None
        lr = optimizer.param_groups[0]["lr"]
        sums = trainer.train_epoch(epoch, optimizer, start_batch, sums, on_interrupt)
        scheduler.step()
        epoch_metrics = {"train": sums.metrics(env, run.device)}     # waits for the device to finish the epoch
        train_seconds = time.perf_counter() - epoch_started
        state["samples_per_rank"] = [int(n) for n in env.gather(sums.values[3])]
        for split in ("valid", "test"):
            if split in run.data.splits:
                epoch_metrics[split] = trainer.evaluate(split)
        seconds = time.perf_counter() - epoch_started
        # images/s of this epoch's training steps over all ranks (of a resumed epoch: of the part run here)
        trained = sum(state["samples_per_rank"]) - (resume_point["sums"][3] * env.world_size if resume_point else 0)
        throughput = trained / max(train_seconds, 1e-9)
        log.info("epoch=%d %s lr=%.6f epoch_seconds=%.1f images_per_second=%.0f", epoch,
                 _format_metrics(epoch_metrics), lr, seconds, throughput)
        state["history"].append(_flat(epoch, epoch_metrics, lr, seconds, throughput))
        state["epoch"] = epoch
        valid_loss = epoch_metrics["valid"]["loss"]
        if valid_loss < state["best_valid_loss"]:
            state.update(best_valid_loss=valid_loss, best_epoch=epoch, stale_epochs=0,
                         best_model=copy.deepcopy(trainer.trained.state_dict()))
        else:
            state["stale_epochs"] += 1
        if args.patience and state["stale_epochs"] >= args.patience:
            log.info("early stop: valid loss has not improved for %d epochs (best: epoch %d)",
                     state["stale_epochs"], state["best_epoch"])
            state["finished"] = True
        if epoch >= args.epochs:
            state["finished"] = True
        snapshot = checkpoint_state(None)
        if env.is_main:
            save_checkpoint(args.checkpoint_dir, snapshot)
        if run.should_stop():       # every rank at once: the flag of one is not the others'
            if env.is_main:
                log.warning("SIGTERM: checkpoint of epoch %d saved; run again to resume", epoch)
            raise TrainingInterrupted()

    if state["best_model"] is not None:
        trainer.trained.load_state_dict(state["best_model"])
    best = next(row for row in state["history"] if row["epoch"] == state["best_epoch"])
    final = {"best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
             **{k: v for k, v in best.items() if k.split("_")[0] in ("train", "valid", "test")}}
    log.info("best_epoch=%d %s", state["best_epoch"],
             " ".join(f"{k}={v:.4f}" for k, v in final.items() if k.startswith(("valid_", "test_"))))
    report = {"final": final, "history": state["history"], "world_size": env.world_size,
              "train_samples_per_rank": state["samples_per_rank"], "class_names": run.data.class_names,
              "elapsed_seconds": round(time.perf_counter() - started, 2),
              "settings": {k: v for k, v in vars(args).items()}}
    if isinstance(trainer, HeadTrainer):
        report["feature_extraction_seconds"] = round(trainer.extraction_seconds, 3)
    if isinstance(trainer, InMemoryFinetuneTrainer):
        report["image_decode_seconds"] = round(trainer.decode_seconds, 3)
    if env.is_main:
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        write_training_curve(state["history"], output_dir / "training_curve.png")
        config = write_model_dir(args.model_dir, model, arch=args.arch, class_names=run.data.class_names,
                                 image_size=args.image_size, weights=args.weights, mode=args.mode, metrics=final)
        log.info("model %s written to %s", config["model_version"], args.model_dir)
        if args.archive:
            log.info("archive written to %s", build_model_archive(args.model_dir, args.archive))
    env.barrier()
    return report


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

