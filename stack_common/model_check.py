"""Is a model directory ready to be packed and served: its code/ the current inference/, its model.tar.gz newer than
every file of it. Cheap checks (no torch), so a deploy with nothing to rebuild starts at once."""

import json
from pathlib import Path

from model_layout import CODE_DIR, CONFIG_FILE, INFERENCE_DIR


def has_config(model_dir):
    return (Path(model_dir) / CONFIG_FILE).exists()


def read_config(model_dir):
    return json.loads((Path(model_dir) / CONFIG_FILE).read_text())


def code_is_current(model_dir):
    """True when the model's code/ holds exactly the current inference/*.py."""
    sources = {p.name: p.read_bytes() for p in INFERENCE_DIR.glob("*.py")}
    served = {p.name: p.read_bytes() for p in (Path(model_dir) / CODE_DIR).glob("*.py")}
    return sources == served


def archive_is_current(model_dir, archive):
    """True when `archive` exists and is newer than every file of the model directory."""
    archive = Path(archive)
    newest = max(p.stat().st_mtime for p in Path(model_dir).rglob("*") if p.is_file())
    return archive.exists() and archive.stat().st_mtime >= newest
