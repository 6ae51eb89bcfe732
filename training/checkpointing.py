"""The training state, and checkpoints of it that survive spot interruptions.

`TrainingState` is everything a run needs to go on where it stopped: the model (without the DDP wrapper), optimizer
and scheduler, the epoch (and the batch, when SIGTERM stopped one), the flags, the metrics so far and the best epoch's
weights. It writes itself as a checkpoint (rank 0 writes, every rank's random state goes in) and reads one back.

`checkpoint.pt` is the latest, `checkpoint.prev.pt` the one before; both are written atomically. A latest
checkpoint that cannot be read (a write cut short, a bad sync) falls back to the previous one with a warning rather
than losing the run.
"""

import argparse
import copy
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger("train")

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


class TrainingInterrupted(Exception):
    """SIGTERM arrived; the run saved what it could and stops."""


class CheckpointMismatch(ValueError):
    """The checkpoint belongs to a run with other settings or data."""


def rng_state():
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory, state):
    """Write `state` as the latest checkpoint; the former latest becomes the previous one."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{LATEST}.tmp"
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    latest = directory / LATEST
    if latest.exists():
        os.replace(latest, directory / PREVIOUS)
    os.replace(tmp, latest)
    return latest


def _read(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def load_checkpoint(directory):
    """The newest readable checkpoint in `directory`, or None when there is none."""
    directory = Path(directory)
    latest, previous = directory / LATEST, directory / PREVIOUS
    if latest.exists():
        try:
            return _read(latest)
        except Exception as error:  # any unreadable file: truncated zip, pickle error, wrong format
            if not previous.exists():
                raise CheckpointMismatch(f"checkpoint {latest} is unreadable ({error.__class__.__name__}) and there "
                                         f"is no previous one: remove {directory} to start over") from None
            log.warning("checkpoint %s is unreadable (%s: %s); falling back to the previous one %s",
                        latest, error.__class__.__name__, error, previous)
            return _read(previous)
    if previous.exists():
        return _read(previous)
    return None


SAME_AS_MODEL = "same-as-model"     # the checkpoint's best_model when the best epoch is the latest


@dataclass
class TrainingState:
    """The state of a run that a checkpoint holds; `fingerprint` is what a checkpoint must match to be resumed."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    args: argparse.Namespace
    fingerprint: dict
    backbone_digest: str | None = None      # head mode: checkpoints hold the head, resumed on this backbone only
    epoch: int = 0                          # the last finished epoch
    history: list = field(default_factory=list)
    best_epoch: int = 0
    best_valid_loss: float = math.inf
    best_model: dict | None = None
    stale_epochs: int = 0
    in_progress: dict | None = None         # {epoch, batch, sums} of an epoch SIGTERM stopped
    finished: bool = False
    samples_per_rank: list = field(default_factory=list)
    tracking_run_id: str | None = None      # the MLflow run a resumed run goes on in (rank 0's)

    PROGRESS = ("epoch", "history", "best_epoch", "best_valid_loss", "best_model", "stale_epochs", "in_progress",
                "finished", "samples_per_rank")

    def to_checkpoint(self, rngs, in_progress=None):
        """The checkpoint's contents, with `rngs` (every rank's random state) and `in_progress` (None at an
        epoch's end). When the epoch just finished is the best one, its weights are stored once, not twice."""
        progress = {name: getattr(self, name) for name in self.PROGRESS}
        progress["in_progress"] = in_progress
        if in_progress is None and self.best_epoch == self.epoch:
            progress["best_model"] = SAME_AS_MODEL
        return {"fingerprint": self.fingerprint, "model": self.model.state_dict(),
                "backbone_digest": self.backbone_digest, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rngs, "args": vars(self.args),
                "tracking_run_id": self.tracking_run_id, **progress}

    def save(self, env, in_progress=None):
        """Write a checkpoint (collective: every rank calls it, rank 0 writes); its path on rank 0, else None."""
        checkpoint = self.to_checkpoint(env.gather(rng_state()), in_progress)
        return save_checkpoint(self.args.checkpoint_dir, checkpoint) if env.is_main else None

    def restore(self, checkpoint, env):
        """Go on from `checkpoint` (one whose fingerprint matched); CheckpointMismatch if its backbone differs."""
        if checkpoint.get("backbone_digest") != self.backbone_digest:
            raise CheckpointMismatch(f"the checkpoint in {self.args.checkpoint_dir} was trained on another backbone: "
                                     f"pass --no-resume to start over")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        for name in self.PROGRESS:
            setattr(self, name, checkpoint[name])
        self.tracking_run_id = checkpoint.get("tracking_run_id")
        if self.best_model == SAME_AS_MODEL:
            self.best_model = checkpoint["model"]
        if len(checkpoint["rng"]) == env.world_size:
            set_rng_state(checkpoint["rng"][env.rank])
        else:
            log.warning("checkpoint was written by %d process(es), this run has %d: random state not restored",
                        len(checkpoint["rng"]), env.world_size)

    def end_epoch(self, row, valid_loss):
        """Record the finished epoch's metrics `row`; the best weights are kept, patience and --epochs applied."""
        self.history.append(row)
        self.epoch = row["epoch"]
        if valid_loss < self.best_valid_loss:
            self.best_valid_loss, self.best_epoch, self.stale_epochs = valid_loss, self.epoch, 0
            self.best_model = copy.deepcopy(self.model.state_dict())
        else:
            self.stale_epochs += 1
        patience = self.args.patience
        if patience and self.stale_epochs >= patience:
            log.info("early stop: valid loss has not improved for %d epochs (best: epoch %d)",
                     self.stale_epochs, self.best_epoch)
            self.finished = True
        if self.epoch >= self.args.epochs:
            self.finished = True

    def load_best(self):
        """Put the best epoch's weights into the model; that epoch's metrics row."""
        if self.best_model is not None:
            self.model.load_state_dict(self.best_model)
        return next(row for row in self.history if row["epoch"] == self.best_epoch)


def read_checkpoint(directory, fingerprint):
    """The checkpoint to resume from, or None; CheckpointMismatch when it is unusable or from other settings."""
    checkpoint = load_checkpoint(directory)
    if checkpoint is not None and checkpoint["fingerprint"] != fingerprint:
        changed = sorted(k for k in fingerprint if checkpoint["fingerprint"].get(k) != fingerprint[k])
        raise CheckpointMismatch(f"the checkpoint in {directory} is from a run with other {', '.join(changed)}: "
                                 f"pass --no-resume to start over (or use another --checkpoint-dir)")
    return checkpoint


def remove_checkpoints(directory):
    for name in (LATEST, PREVIOUS):
        path = Path(directory) / name
        if path.exists():
            path.unlink()
