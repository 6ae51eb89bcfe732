"""The model directory contract and model.tar.gz.

A model directory holds `model.pth` (state_dict of the bare model), `model_config.json` and `code/` (every
inference/*.py plus code/requirements.txt). model.tar.gz is that directory's contents at the top level, which is
what the SageMaker PyTorch inference container unpacks into /opt/ml/model; it is built deterministically, so
the same model gives the same bytes (and the same S3 ETag).
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import torch

from model_layout import CODE_DIR, CONFIG_FILE, INFERENCE_DIR, WEIGHTS_FILE

# What the serving container must pip-install beyond its own torch/torchvision/pillow. The serving code may keep
# its own list in inference/requirements.txt; that file then wins.
DEFAULT_CODE_REQUIREMENTS = "# the SageMaker PyTorch inference image already has torch, torchvision and pillow\n"


def unwrap_model(model):
    """The bare module under DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _atomic_write_bytes(path, data):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def copy_inference_code(code_dir, inference_dir=INFERENCE_DIR):
    code_dir = Path(code_dir)
    if code_dir.exists():
        shutil.rmtree(code_dir)
    code_dir.mkdir(parents=True)
    sources = sorted(Path(inference_dir).glob("*.py"))
    if not sources:
        raise FileNotFoundError(f"no inference code (*.py) in {inference_dir}")
    for source in sources:
        shutil.copyfile(source, code_dir / source.name)
    requirements = Path(inference_dir) / "requirements.txt"
    text = requirements.read_text() if requirements.exists() else DEFAULT_CODE_REQUIREMENTS
    (code_dir / "requirements.txt").write_text(text)
    return code_dir


def write_model_dir(model_dir, model, *, arch, class_names, image_size, weights, mode, metrics=None,
                    inference_dir=INFERENCE_DIR):
    """Write weights, config and code/ into `model_dir`; returns the config written.

    model_version is derived from the weights' bytes, so it names exactly this model.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(unwrap_model(model).state_dict(), buffer)
    weights_bytes = buffer.getvalue()
    _atomic_write_bytes(model_dir / WEIGHTS_FILE, weights_bytes)
    config = {
        "arch": arch,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "image_size": int(image_size),
        "model_version": hashlib.sha256(weights_bytes).hexdigest()[:12],
        "weights": weights,
        "mode": mode,
        "metrics": metrics or {},
    }
    _atomic_write_bytes(model_dir / CONFIG_FILE, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    copy_inference_code(model_dir / CODE_DIR, inference_dir)
    return config


def _normalized(info):
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def build_model_archive(model_dir, archive_path):
    """Tar and gzip the contents of `model_dir` (top level, sorted, no timestamps or owners) into `archive_path`."""
    model_dir = Path(model_dir)
    archive_path = Path(archive_path)
    for required in (WEIGHTS_FILE, CONFIG_FILE, CODE_DIR):
        if not (model_dir / required).exists():
            raise FileNotFoundError(f"{model_dir} is not a model directory: {required} is missing")
    archive_path.parent.mkdir(parents=True, exist_ok=True)
    entries = sorted(p for p in model_dir.rglob("*") if not p.name.startswith("."))
    tmp = archive_path.with_name(f".{archive_path.name}.tmp")
    # mtime=0 and no file name in the gzip header; level 6: weights barely compress, 9 only costs time
    with open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in entries:
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False, filter=_normalized)
    os.replace(tmp, archive_path)
    return archive_path
