"""`invoke data --upload`: copy the local data set to the bucket's data/ prefix, where the training jobs read it.

Like `aws s3 sync` without deletions: a file is uploaded when its key is missing or its size differs, in parallel,
with one progress bar over the bytes. Running it again after an interruption uploads only what is missing.
"""

from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import botocore.exceptions
from invoke.exceptions import Exit
from tqdm import tqdm

from aws.bootstrap import bootstrap_outputs
from aws.sagemaker_jobs import data_uri
from aws.session import aws_settings, client, require_credentials, split_s3_uri, stops_with_one_line
from configuration.areas import DataSettings, load


def local_files(root):
    return {path.relative_to(root).as_posix(): path for path in sorted(Path(root).rglob("*"))
            if path.is_file() and not path.name.startswith(".")}


def remote_sizes(s3, bucket, prefix):
    sizes = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        sizes.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
    return sizes


@stops_with_one_line("data upload")
def upload(c):
    """Sync the data set (data.dir) to s3://<bucket>/data/<its name>/; returns that URI."""
    root = load(c, DataSettings).dir
    if not (root / "train").is_dir():
        raise Exit(f"no data set at {root} (it needs train/ and valid/): run `invoke data` first")
    identity = require_credentials(c)
    if not aws_settings(c).bucket:
        bootstrap_outputs(c, identity, needed=("bucket_name",))
    uri = data_uri(c, identity)
    bucket, prefix = split_s3_uri(uri)
    s3 = client(c, "s3")
    try:
        existing = remote_sizes(s3, bucket, prefix)
    except botocore.exceptions.ClientError as error:
        raise Exit(f"cannot list s3://{bucket}/{prefix} ({error.response['Error']['Code']}): check aws.bucket")
    files = local_files(root)
    todo = {name: path for name, path in files.items() if existing.get(prefix + name) != path.stat().st_size}
    total = sum(path.stat().st_size for path in todo.values())
    print(f"{len(files)} files in {root}; {len(files) - len(todo)} already in {uri}, "
          f"uploading {len(todo)} ({total / 1e6:.1f} MB)", flush=True)
    with tqdm(total=total, unit="B", unit_scale=True, desc="upload") as progress, \
            ThreadPoolExecutor(max_workers=aws_settings(c).upload_workers) as pool:
        futures = {pool.submit(s3.upload_file, str(path), bucket, prefix + name, Callback=progress.update): name
                   for name, path in todo.items()}
        for future in as_completed(futures):
            try:
                future.result()
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
                raise Exit(f"upload of {futures[future]} failed: {error} (run it again: it resumes)")
    print(f"data set in {uri}")
    return uri
