"""Checkpoints that survive spot interruptions: written atomically, the previous one kept as a fallback.

`checkpoint.pt` is the latest, `checkpoint.prev.pt` the one before. A latest checkpoint that cannot be read
(a write cut short, a bad sync) falls back to the previous one with a warning rather than losing the run.
"""

import logging
import os
import random
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


def remove_checkpoints(directory):
    for name in (LATEST, PREVIOUS):
        path = Path(directory) / name
        if path.exists():
            path.unlink()
