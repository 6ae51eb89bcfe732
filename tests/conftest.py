"""Test setup shared by every test module: the repository's source folders are importable as they are at run time."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for folder in (REPO_ROOT, REPO_ROOT / "training", REPO_ROOT / "inference"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_image_folder(tmp_path_factory):
    """A tiny generated ImageFolder set: 3 classes (Red circle, Green square, Blue triangle), 32 px JPEGs."""
    import synthetic

    root = tmp_path_factory.mktemp("tiny-data") / "shapes"
    return synthetic.make_synthetic_dataset(root, classes=3, split_sizes={"train": 8, "valid": 4, "test": 4},
                                            image_size=40, seed=1)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, tiny_image_folder):
    """A real model directory (model.pth, model_config.json, code/) from train.main: resnet18, 1 epoch, 32 px.

    Its model.tar.gz is next to it: trained_model_dir.parent / "model.tar.gz".
    """
    import train

    work = tmp_path_factory.mktemp("trained")
    args = train.parse_args([
        "--data", str(tiny_image_folder), "--model-dir", str(work / "model"), "--output-dir", str(work / "output"),
        "--checkpoint-dir", str(work / "checkpoints"), "--archive", str(work / "model.tar.gz"),
        "--arch", "resnet18", "--weights", "none", "--mode", "finetune", "--image-size", "32", "--epochs", "1",
        "--batch-size", "8", "--num-workers", "0", "--threads", "1"])
    train.main(args)
    return work / "model"
