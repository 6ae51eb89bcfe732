"""The record of the latest model trained for AWS: which model.tar.gz `invoke plan` deploys when no URI is given.

train --target sagemaker, tune and ec2-train write it; plan reads it. One small JSON file under build/, so the
review of a plan can say where its model came from.
"""

import json
import os
import re
from datetime import datetime, timezone

from invoke.exceptions import Exit

from aws.session import aws_settings

# What terraform/ accepts as model_data_url (its variable validation): s3://<bucket>/<key>/model.tar.gz.
MODEL_URI_PATTERN = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/(.+/)?model\.tar\.gz$")


def record_path(c):
    return aws_settings(c).model_record


def check_model_uri(uri):
    if not MODEL_URI_PATTERN.match(uri or ""):
        raise Exit(f"not a model archive URI: {uri!r} (expected s3://<bucket>/<key>/model.tar.gz)")
    return uri


def record_model(c, uri, source, **details):
    """Remember `uri` as the latest model; `source` says what produced it (training job, tuning job, EC2 host)."""
    check_model_uri(uri)
    path = record_path(c)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"model_data_url": uri, "source": source,
              "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **details}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    print(f"model recorded for `invoke plan`: {uri}")
    return record


def latest_model(c):
    """The recorded model's record, or None when nothing was trained for AWS yet."""
    path = record_path(c)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise Exit(f"{path} is not valid JSON: delete it and train again, or pass --model-uri")


def resolve_model_uri(c, flag_uri=None):
    if flag_uri:
        return check_model_uri(flag_uri)
    record = latest_model(c)
    if record is None:
        raise Exit("no model to deploy: pass --model-uri s3://.../model.tar.gz, or train one first "
                   "(`invoke train --target sagemaker`, `invoke tune` or `invoke ec2-train`)")
    return check_model_uri(record.get("model_data_url"))
