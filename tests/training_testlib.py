"""Helpers of the training tests: the flags of a tiny run, and train.py run as a script, under torchrun or
interrupted by SIGTERM, with the metrics history it wrote."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from training import train

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO_ROOT / "training" / "train.py"


def tiny_args(data, work, *extra):
    """Flags of a small run: resnet18 from scratch at 32 px, one thread, no loader workers."""
    return ["--data", str(data), "--model-dir", str(work / "model"), "--output-dir", str(work / "output"),
            "--checkpoint-dir", str(work / "checkpoints"), "--arch", "resnet18", "--weights", "none",
            "--image-size", "32", "--batch-size", "4", "--num-workers", "0", "--threads", "1", *extra]


def run_script(args, **popen):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(TRAIN_SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=300, **popen)


def history(work):
    return json.loads((work / "output" / "metrics.json").read_text())["history"]


def assert_same_history(left, right):
    assert [row["epoch"] for row in left] == [row["epoch"] for row in right]
    for a, b in zip(left, right):
        for key in a:
            if key.startswith(("train_", "valid_", "test_")):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["epoch"], key)


def sigterm_after_first_epoch(args):
    """Run train.py with `args`, send SIGTERM once epoch 1 is logged; its output lines (it must exit 143)."""
    process = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "epoch=1 " in line:
            process.send_signal(signal.SIGTERM)
            break
    lines += process.stdout.readlines()
    assert process.wait(timeout=120) == train.INTERRUPTED_EXIT_CODE, "".join(lines)
    return lines


def run_two_processes(args, work):
    """train.py under torchrun with 2 processes; its output and the metrics.json it wrote in `work`."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(TRAIN_SCRIPT),
         *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, json.loads((work / "output" / "metrics.json").read_text())
