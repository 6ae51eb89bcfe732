"""Does a model.tar.gz trained here load and answer the same under the serving image's Python, torch and torchvision?

The endpoint runs the SageMaker PyTorch inference image of terraform's endpoint.framework_version (2.6.0: Python
3.12, torch 2.6.0, torchvision 0.21.0); models are trained with torch 2.14.1 here and 2.8 in the training image.
This builds a virtual environment with the serving versions (once; PyPI's Linux torch wheel imports only with its
nvidia-* CUDA wheels, about 3 GB of downloads and 5.4 GB on disk), then in it and in this interpreter unpacks the
archive, loads it with the archive's own code/inference.py (`model_fn`, which reads the weights with
`torch.load(weights_only=True)`), sends the same JPEGs through `input_fn`, `predict_fn` and `output_fn`, and
compares the answers: the same classes in the same order, probabilities within --tolerance.

    .venv/bin/python tools/check_serving_versions.py build/model.tar.gz
    .venv/bin/python tools/check_serving_versions.py --prepare            # only build the environment

Exit status 0: the answers agree; 1: they differ (printed); 2: bad arguments or the environment cannot be built.
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SERVING_PYTHON = "3.12"
SERVING_TORCH = "2.6.0"          # terraform/variables.tf endpoint.framework_version (a test keeps them equal)
SERVING_PACKAGES = (f"torch=={SERVING_TORCH}", "torchvision==0.21.0", "pillow")
DEFAULT_TOLERANCE = 1e-4
REPO_ROOT = Path(__file__).resolve().parent.parent


def default_venv():
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dog-breeds" / f"serving-torch{SERVING_TORCH}-py{SERVING_PYTHON}"


def _serving_python_binary(log=print):
    """The image's Python: python3.12 on PATH, else pyenv's 3.12; failing both, this Python (torch 2.6.0 has wheels
    for 3.9 to 3.13, so the check still holds for torch and torchvision)."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    pyenv_pythons = sorted(str(path) for path in pyenv_root.glob(f"versions/{SERVING_PYTHON}.*/bin/python3"))
    candidates = [f"python{SERVING_PYTHON}", *pyenv_pythons]
    for candidate in candidates:
        try:
            found = subprocess.run([candidate, "-c", "import sys; print(sys.executable)"], capture_output=True,
                                   text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if found.returncode == 0:
            return found.stdout.strip()
    log(f"no Python {SERVING_PYTHON} here: building the serving environment with Python {sys.version.split()[0]}")
    return getattr(sys, "_base_executable", sys.executable)


def _python_version(python):
    done = subprocess.run([str(python), "-I", "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{python} does not start: {(done.stderr or done.stdout).strip()[-2000:]}")
    return done.stdout.strip()


def _read_marker(marker):
    """(packages, python version or None) recorded in the environment's marker file."""
    lines = marker.read_text().split()
    python = next((line.split("==", 1)[1] for line in lines if line.startswith("python==")), None)
    return [line for line in lines if not line.startswith("python==")], python


def prepare_venv(venv, log=print):
    """The environment's python, building it first if it lacks the serving packages; raises RuntimeError.

    The marker file lists the packages and the environment's Python version; a Python other than the image's is
    said on every use (the check then holds for torch and torchvision only)."""
    venv = Path(venv)
    python = venv / "bin" / "python"
    marker = venv / "serving-packages.txt"
    if python.exists() and marker.exists() and _read_marker(marker)[0] == list(SERVING_PACKAGES):
        version = _read_marker(marker)[1]
        if version is None:                     # a marker written before it recorded the Python version
            version = _python_version(python)
            marker.write_text("\n".join([*SERVING_PACKAGES, f"python=={version}"]) + "\n")
    else:
        base = _serving_python_binary(log)
        started = time.monotonic()
        log(f"building {venv} with Python {SERVING_PYTHON} and {' '.join(SERVING_PACKAGES)} (about 3 GB from PyPI)")
        for command in ([base, "-m", "venv", "--clear", str(venv)],
                        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *SERVING_PACKAGES]):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command[:4])} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
        version = _python_version(python)
        marker.write_text("\n".join([*SERVING_PACKAGES, f"python=={version}"]) + "\n")
        log(f"built in {time.monotonic() - started:.0f} s")
    if version.rsplit(".", 1)[0] != SERVING_PYTHON:
        log(f"warning: {venv} runs Python {version}, not the image's {SERVING_PYTHON}")
    return python


def answer(archive, images):
    """Unpack `archive`, load it with its code/inference.py, answer each JPEG in `images`.

    Only in a fresh `python -I` (see `answer_in`): in a process that already imported another `inference` (the
    repository's inference/ folder, under pytest) that one would answer instead of the archive's."""
    import torch
    import torchvision

    with tempfile.TemporaryDirectory(prefix="serving-check-") as model_dir:
        with tarfile.open(archive) as tar:
            tar.extractall(model_dir, filter="data")
        sys.path.insert(0, str(Path(model_dir) / "code"))
        import inference

        model = inference.model_fn(model_dir)
        answers = {}
        for image in sorted(Path(images).glob("*.jpg")):
            request = inference.input_fn(image.read_bytes(), "image/jpeg")
            body, _ = inference.output_fn(inference.predict_fn(request, model), "application/json")
            answers[image.name] = json.loads(body)
    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
            "answers": answers}


def write_images(folder, count=4, size=64):
    """A few generated JPEGs (training/synthetic.py's shapes) to ask both environments about."""
    import numpy as np
    import random

    from training import synthetic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = synthetic.draw_sample(index % len(synthetic.CLASSES), size, random.Random(index),
                                      np.random.default_rng(index))
        image.save(folder / f"sample-{index}.jpg", quality=90)
    return folder


def differences(expected, actual, tolerance):
    """Lines saying where `actual`'s answers differ from `expected`'s; empty when they agree."""
    found = []
    for name, want in expected["answers"].items():
        got = actual["answers"].get(name)
        if got is None:
            found.append(f"{name}: no answer")
            continue
        if got["model_version"] != want["model_version"]:
            found.append(f"{name}: model_version {got['model_version']} != {want['model_version']}")
        want_classes = [p["class_name"] for p in want["predictions"]]
        got_classes = [p["class_name"] for p in got["predictions"]]
        if got_classes != want_classes:
            found.append(f"{name}: classes {got_classes} != {want_classes}")
            continue
        gap = max(abs(a["probability"] - b["probability"]) for a, b in zip(got["predictions"], want["predictions"]))
        if gap > tolerance:
            found.append(f"{name}: probabilities differ by {gap:.2e} (tolerance {tolerance:.0e})")
    return found


def compare(archive, venv=None, tolerance=DEFAULT_TOLERANCE, log=print):
    """(here, serving, differences) for `archive`: the answers of this interpreter and of the serving venv."""
    python = prepare_venv(venv or default_venv(), log=log)
    with tempfile.TemporaryDirectory(prefix="serving-images-") as images:
        write_images(images)
        here = answer_in(sys.executable, archive, images, "this environment")
        serving = answer_in(python, archive, images, "the serving environment")
    return here, serving, differences(here, serving, tolerance)


def answer_in(python, archive, images, name):
    """`answer` run by `python -I`: it sees neither this repository nor PYTHONPATH, only the archive's own code."""
    done = subprocess.run([str(python), "-I", __file__, "--answer", str(archive), "--images", str(images)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{name} could not answer: {done.stderr.strip()[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", nargs="?", help="model.tar.gz (training/model_archive.py's layout)")
    parser.add_argument("--venv", default=None, help=f"the serving environment (default: {default_venv()})")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"largest allowed probability difference (default: {DEFAULT_TOLERANCE})")
    parser.add_argument("--prepare", action="store_true", help="only build the serving environment")
    parser.add_argument("--answer", help=argparse.SUPPRESS)       # inside the serving environment
    parser.add_argument("--images", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.answer:
        print(json.dumps(answer(args.answer, args.images)))
        return 0
    try:
        if args.prepare:
            print(prepare_venv(args.venv or default_venv()))
            return 0
        if not args.archive or not Path(args.archive).is_file():
            print(f"error: give a model.tar.gz to check (not found: {args.archive})", file=sys.stderr)
            return 2
        here, serving, found = compare(args.archive, args.venv, args.tolerance)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for side in (here, serving):
        print(f"python {side['python']}, torch {side['torch']}, torchvision {side['torchvision']}: "
              f"{len(side['answers'])} answers")
    for line in found:
        print(line)
    print("the answers agree" if not found else f"{len(found)} answers differ")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
