"""Build the Lambda deployment package, build/function.zip, reproducibly.

The zip holds lambda/*.py and nothing else (the Lambda Python runtime ships boto3). Entries are sorted and carry
a fixed timestamp and permissions, so the zip's bytes, and Terraform's source_code_hash of it, change only when
the code does. The local function server and the AWS deployment use the same file.
"""

import base64
import hashlib
import importlib.util
import os
import zipfile
from pathlib import Path

LAMBDA_DIR = Path(__file__).resolve().parent.parent / "lambda"
HANDLER_FILE = LAMBDA_DIR / "lambda_function.py"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)   # the earliest date a zip entry can hold


def build_function_zip(zip_path, source_dir=LAMBDA_DIR):
    """Write the zip to `zip_path` (atomically) and return its path."""
    sources = sorted(Path(source_dir).glob("*.py"))
    if not sources:
        raise FileNotFoundError(f"no function code (*.py) in {source_dir}")
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for source in sources:
            entry = zipfile.ZipInfo(source.name, date_time=FIXED_DATE)
            entry.external_attr = 0o100644 << 16   # regular file, rw-r--r--
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, source.read_bytes(), compresslevel=9)
    os.replace(tmp, zip_path)
    return zip_path


def load_handler_module(module_name="lambda_function"):
    """lambda/lambda_function.py imported into this process under `module_name`, as Lambda imports it from /var/task,
    without putting lambda/ on sys.path (its module-level clients are built now, from the environment)."""
    spec = importlib.util.spec_from_file_location(module_name, HANDLER_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source_code_hash(zip_path):
    """base64(sha256(zip)), the form Lambda reports as CodeSha256 and Terraform compares as source_code_hash."""
    return base64.b64encode(hashlib.sha256(Path(zip_path).read_bytes()).digest()).decode()
