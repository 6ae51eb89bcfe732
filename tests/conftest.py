"""Test setup shared by every test module: the repository's source folders are importable as they are at run time."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for folder in (REPO_ROOT, REPO_ROOT / "training", REPO_ROOT / "inference"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
