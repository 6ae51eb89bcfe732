"""Helpers of the training tests: the flags of a tiny run, train.py run as a script, under torchrun or
interrupted by SIGTERM, with the metrics history it wrote, and what a model directory scores on a test split
through the serving preprocessing."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from architectures import build_model
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


def serving_scores(model_dir, data_root, leave_out=()):
    """model.pth's class probabilities for every test image (but `leave_out`) decoded and transformed the way the
    endpoint does: (probabilities, labels, image paths relative to `data_root`), in the split's order."""
    from image_decoding import decode_image
    import preprocessing

    config = json.loads((Path(model_dir) / "model_config.json").read_text())
    model = build_model(config["arch"], config["num_classes"], weights="none")
    model.load_state_dict(torch.load(Path(model_dir) / "model.pth", weights_only=True))
    classes = sorted(folder.name for folder in (data_root / "train").iterdir() if folder.is_dir())
    images, labels, paths = [], [], []
    for folder in sorted((data_root / "test").iterdir()):
        for path in sorted(folder.iterdir()):
            if path not in leave_out:
                picture = decode_image(path.read_bytes(), preprocessing.decode_side(config["image_size"]))
                images.append(preprocessing.eval_transform(config["image_size"])(picture))
                labels.append(classes.index(folder.name))
                paths.append(str(path.relative_to(data_root)))
    with torch.inference_mode():
        logits = model.eval()(torch.stack(images))
    return logits.softmax(dim=1).numpy(), np.array(labels), paths


def assert_report_is_what_the_model_scores(work, data_root, leave_out=()):
    """<work>/output/evaluation/report.json holds what <work>/model scores through the serving preprocessing."""
    from training.evaluation_report import calibration

    report = json.loads((work / "output" / "evaluation" / "report.json").read_text())
    probabilities, labels, paths = serving_scores(work / "model", data_root, leave_out)
    predicted, confidences = probabilities.argmax(axis=1), probabilities.max(axis=1)
    classes = len(report["class_names"])
    expected = np.zeros((classes, classes), dtype=int)
    np.add.at(expected, (labels, predicted), 1)
    assert report["confusion_matrix"] == expected.tolist()
    assert (report["images"], report["correct"]) == (len(labels), int((predicted == labels).sum()))
    assert report["accuracy"] == pytest.approx((predicted == labels).mean(), abs=1e-6)
    assert report["expected_calibration_error"] == pytest.approx(
        calibration(confidences, predicted == labels)[1], abs=1e-5)
    wrong = {paths[i]: confidences[i] for i in np.flatnonzero(predicted != labels)}
    shown = report["misclassified_shown"]
    assert report["misclassified"] == len(wrong) and len(shown) == min(16, len(wrong))
    for entry in shown:
        assert entry["true"] != entry["predicted"]
        assert entry["confidence"] == pytest.approx(wrong[entry["image"]], abs=1e-5)
    most_confident = sorted(wrong.values(), reverse=True)[:len(shown)]
    assert [entry["confidence"] for entry in shown] == pytest.approx(most_confident, abs=1e-5)
    return report
