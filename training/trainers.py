"""The three ways train.py trains, behind one interface (`Trainer`), and the run they share (`Run`).

- `HeadTrainer` (--mode head): frozen backbone, its features computed once per split (cached), only the head trains.
- `FinetuneTrainer` (--mode finetune --image-cache off): the whole network, images decoded every epoch in loader
  workers and augmented one by one.
- `InMemoryFinetuneTrainer` (--mode finetune --image-cache memory): the whole network, images decoded once into
  device memory and augmented there in batches.

`make_trainer(run)` picks one from the flags; the epoch loop (train.py) only calls what `Trainer` declares.
"""

import abc
import logging
import math
import os
import signal
import sys
import time
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from tqdm import tqdm

import preprocessing
from training.checkpointing import TrainingInterrupted
from training.decoded_images import decode_shard
from training.distributed_env import data_parallel
from training.feature_cache import backbone_digest, cache_key, cached_features, extract_features
from training.imagefolder_data import ImageSamples, collate_skipping_bad

log = logging.getLogger("train")


class StopFlag:
    """Set by SIGTERM (SageMaker spot reclaim, scale-in, torchrun shutting down, `kill`) while installed."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:   # not the main thread: nobody can deliver SIGTERM to us there anyway
            self._previous = None
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame):
        self.requested = True


class StopRequested(Exception):
    """SIGTERM reached a rank: every rank stops before training batch `batch` of the epoch, with `sums` so far."""

    def __init__(self, batch, sums):
        super().__init__(batch)
        self.batch, self.sums = batch, sums


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
    """What every trainer shares: flags, process group, device, data, model, SIGTERM flag, batch size per rank."""

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

    def layout(self, images):
        """`images` in the memory layout the network runs fastest in on this device."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

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

    def progress(self, epoch, total, start_batch):
        """The epoch's progress bar on an interactive rank 0, else None."""
        if not self.show_progress:
            return None
        return tqdm(total=total, initial=start_batch, desc=f"epoch {epoch} train", leave=False)


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


def _step(optimizer, logits, labels, sums):
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    sums.add(logits, labels)


class Trainer(abc.ABC):
    """What the epoch loop needs of a way to train.

    `model` is the module that is trained, evaluated and checkpointed (never wrapped by DDP): the whole network, or
    only its head. `parameters` are what the optimizer updates. `backbone_digest` is None unless the checkpoints
    leave the backbone out (head mode), then the digest of the backbone they must be resumed on.
    """

    backbone_digest = None

    def __init__(self, run, model, network):
        self.run, self.model, self.network = run, model, network
        self.parameters = [p for p in model.parameters() if p.requires_grad]

    @abc.abstractmethod
    def train_epoch(self, epoch, optimizer, start_batch, sums):
        """Train epoch `epoch` from batch `start_batch` on, adding to `sums`; returns them. Raises StopRequested
        (on every rank at the same batch) when SIGTERM arrived."""

    @abc.abstractmethod
    def eval_batches(self, split):
        """(inputs, labels, sample indices into `split`) of this rank's shard of `split`, on the device, in
        batches."""

    def eval_context(self):
        """What evaluation runs under: autocast on a GPU."""
        return self.run.autocast()

    @torch.inference_mode()
    def evaluate(self, split):
        """{loss, accuracy, top5_accuracy, samples} of `split` over every rank."""
        self.model.eval()
        sums = Sums()
        with self.eval_context():
            for inputs, labels, _ in self.eval_batches(split):
                sums.add(self.model(inputs), labels)
        return sums.metrics(self.run.env, self.run.device)

    @torch.inference_mode()
    def predict(self, split):
        """(logits, labels, sample indices) of this rank's shard of `split`, on the CPU: the outputs `evaluate`
        scores, on the inputs it scores them on (the eval transform's, as serving makes them)."""
        self.model.eval()
        logits, labels, indices = [], [], []
        with self.eval_context():
            for batch_inputs, batch_labels, batch_indices in self.eval_batches(split):
                logits.append(self.model(batch_inputs).float().cpu())
                labels.append(batch_labels.cpu())
                indices.append(batch_indices.cpu())
        if not logits:
            return torch.empty(0, 0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
        return torch.cat(logits), torch.cat(labels), torch.cat(indices)

    def figures(self):
        """Timings of the trainer's own preparation, for metrics.json."""
        return {}


def _whole_network(run):
    network = data_parallel(run.model, run.env, run.device)
    return torch.compile(network) if run.args.compile else network


class FinetuneTrainer(Trainer):
    """The whole network, trained on augmented images; images are decoded every epoch."""

    def __init__(self, run):
        super().__init__(run, run.model, _whole_network(run))
        args = run.args
        self.train_set = ImageSamples(run.data.splits["train"].samples,
                                      preprocessing.train_transform(args.image_size), seed=args.seed,
                                      min_side=preprocessing.decode_side(args.image_size, for_training=True))
        self.eval_sets = {name: ImageSamples(split.samples, preprocessing.eval_transform(args.image_size),
                                             min_side=preprocessing.decode_side(args.image_size))
                          for name, split in run.data.splits.items()}

    def train_epoch(self, epoch, optimizer, start_batch, sums):
        run = self.run
        self.network.train()
        self.train_set.epoch = epoch
        order = _epoch_order(len(self.train_set), run.env.world_size, run.env.rank, run.args.seed, epoch)
        batches = run.loader(self.train_set, order[start_batch * run.per_rank_batch:])
        bar = run.progress(epoch, math.ceil(len(order) / run.per_rank_batch), start_batch)
        for batch_number, batch in enumerate(batches, start=start_batch):
            if bar is not None:
                bar.update()
            if not self._usable(epoch, batch_number, batch, sums):
                continue
            images, labels, _ = batch
            with run.autocast():
                logits = self.network(run.layout(images.to(run.device, non_blocking=True)))
            _step(optimizer, logits, labels.to(run.device, non_blocking=True), sums)
        if bar is not None:
            bar.close()
        return sums

    def _usable(self, epoch, batch_number, batch, sums):
        """Batch norm cannot train on a single image (a last batch of 1, or a batch of unreadable images); every
        rank skips the step together so no rank waits for the others' gradients. One collective carries that
        and SIGTERM, so all ranks also stop at the same batch."""
        run = self.run
        unusable = 1.0 if batch is None or len(batch[1]) < 2 else 0.0
        stop = 1.0 if run.stop.requested else 0.0
        if run.env.enabled:
            unusable, stop = run.env.sum([unusable, stop], run.device)
        if stop:
            raise StopRequested(batch_number, sums)
        if unusable:
            log.warning("epoch %d batch %d skipped: fewer than 2 readable images on a process", epoch, batch_number)
        return not unusable

    def eval_batches(self, split):
        run, dataset = self.run, self.eval_sets[split]
        for batch in run.loader(dataset, run.shard(len(dataset))):
            if batch is not None:
                images, labels, indices = batch
                yield run.layout(images.to(run.device, non_blocking=True)), labels.to(run.device), indices


class ShardTrainer(Trainer):
    """A trainer whose ranks each keep a fixed shard of the training set in memory and reshuffle it per epoch.

    Every rank takes the same number of steps: shards are padded (wrapping around) to the largest one.
    """

    def __init__(self, run, model, network, shard_length):
        super().__init__(run, model, network)
        self.shard_length = shard_length
        self.steps_length = int(run.env.max(shard_length, run.device))

    def batches_per_epoch(self):
        return math.ceil(self.steps_length / self.run.per_rank_batch)

    def shard_batches(self, epoch, start_batch, sums):
        """(batch number, indices into the shard) of `epoch` from `start_batch` on; StopRequested on SIGTERM."""
        run = self.run
        order = _shard_order(self.shard_length, self.steps_length, run.args.seed, epoch, run.env.rank)
        order = order.to(run.device)
        step = run.per_rank_batch
        for batch_number in range(start_batch, self.batches_per_epoch()):
            if run.should_stop():
                raise StopRequested(batch_number, sums)
            yield batch_number, order[batch_number * step:(batch_number + 1) * step]


class InMemoryFinetuneTrainer(ShardTrainer):
    """The whole network, on images decoded once into device memory and augmented there in batches."""

    EVAL_BATCH = 256

    def __init__(self, run):
        args = run.args
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
        super().__init__(run, run.model, _whole_network(run), len(self.stored["train"]))
        self.generator = torch.Generator(device=run.device)

    def train_epoch(self, epoch, optimizer, start_batch, sums):
        run, args, train = self.run, self.run.args, self.stored["train"]
        self.network.train()
        bar = run.progress(epoch, self.batches_per_epoch(), start_batch)
        for batch_number, picked in self.shard_batches(epoch, start_batch, sums):
            if bar is not None:
                bar.update()
            if len(picked) < 2:    # batch norm cannot train on one image; every rank has the same batch count
                continue
            # seeded per batch, so a run resumed mid-epoch draws the same augmentation as an uninterrupted one
            self.generator.manual_seed(args.seed * 1_000_003 + epoch * 10_007 + batch_number * 101 + run.env.rank)
            images = preprocessing.augment_batch(train.images[picked], train.source_sizes[picked], args.image_size,
                                                 self.generator)
            with run.autocast():
                logits = self.network(run.layout(images))
            _step(optimizer, logits, train.labels[picked], sums)
        if bar is not None:
            bar.close()
        return sums

    def eval_batches(self, split):
        stored = self.stored[split]
        for start in range(0, len(stored), self.EVAL_BATCH):
            end = start + self.EVAL_BATCH
            yield (self.run.layout(preprocessing.normalize_batch(stored.images[start:end])), stored.labels[start:end],
                   stored.indices[start:end])

    def figures(self):
        return {"image_decode_seconds": round(self.decode_seconds, 3)}


class HeadTrainer(ShardTrainer):
    """Frozen backbone: its features are computed once per split (cached), then only the head trains on them.

    The backbone is rebuilt identically from arch, weights and seed, so checkpoints hold only the head (kilobytes
    instead of the backbone's 45-100 MB every epoch) plus the backbone's digest as a guard.
    """

    EVAL_BATCH = 1024

    def __init__(self, run):
        backbone = run.model.backbone
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)
        backbone.eval()
        if run.channels_last:
            backbone.to(memory_format=torch.channels_last)
        self.backbone_digest = backbone_digest(backbone)
        started = time.perf_counter()
        identity = run.data.identity()
        self.features = {name: self._features(run, name, split, identity) for name, split in run.data.splits.items()}
        if run.should_stop():
            raise TrainingInterrupted()
        self.extraction_seconds = time.perf_counter() - started
        train_features = self.features["train"][0]
        log.info("features of %s ready in %.1f s (feature size %d)",
                 ", ".join(f"{name}: {len(v[1])}" for name, v in self.features.items()), self.extraction_seconds,
                 train_features.shape[1] if len(train_features) else 0)
        head = run.model.head
        super().__init__(run, head, data_parallel(head, run.env, run.device), len(self.features["train"][1]))

    def _features(self, run, split_name, split, identity):
        """(features, labels, sample indices) of this rank's shard of `split`, the first two on the device: from
        the cache, else computed."""
        args = run.args
        cache_dir = args.feature_cache_dir or os.path.join(args.checkpoint_dir, "features")
        files = [entry for entry in identity["files"] if entry[0] == split_name]
        key = cache_key(args.arch, self.backbone_digest, args.image_size, files)
        indices = run.shard(len(split))

        def compute():
            return extract_features(
                run.model.backbone, split.samples, indices, image_size=args.image_size,
                batch_size=max(run.per_rank_batch, 32), num_workers=args.num_workers, device=run.device,
                autocast=run.autocast, channels_last=run.channels_last,
                # shards may differ by a batch, so no collective here: torchrun signals every rank anyway
                should_stop=lambda: run.stop.requested,
                progress_label=f"{split_name} features" if run.show_progress else None)

        features, labels, indices, _ = cached_features(cache_dir, key, split_name, run.env.rank,
                                                       run.env.world_size, compute)
        return features.to(run.device), labels.to(run.device), indices

    def train_epoch(self, epoch, optimizer, start_batch, sums):
        with one_thread(self.run.device.type == "cpu"):
            self.network.train()
            features, labels, _ = self.features["train"]
            for _, picked in self.shard_batches(epoch, start_batch, sums):
                _step(optimizer, self.network(features[picked]), labels[picked], sums)
        return sums

    def eval_batches(self, split):
        features, labels, indices = self.features[split]
        for start in range(0, len(labels), self.EVAL_BATCH):
            end = start + self.EVAL_BATCH
            yield features[start:end], labels[start:end], indices[start:end]

    def eval_context(self):
        """The head on cached features: no autocast (it never had it), one thread on a CPU."""
        return one_thread(self.run.device.type == "cpu")

    def figures(self):
        return {"feature_extraction_seconds": round(self.extraction_seconds, 3)}


def make_trainer(run):
    if run.args.mode == "head":
        return HeadTrainer(run)
    return InMemoryFinetuneTrainer(run) if run.args.image_cache == "memory" else FinetuneTrainer(run)
