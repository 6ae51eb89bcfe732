"""`invoke data --upload` against moto: what lands in the bucket, and that a second run sends only what changed."""

import boto3
import pytest
from invoke.exceptions import Exit

from aws import data_sync
from aws.session import boto_session
from aws_testlib import (BUCKET, REGION, RequestRecorder, create_bucket, make_context,  # noqa: F401
                              moto_account, aws_credentials)


def make_data_set(root):
    for split, names in {"train": ["a.jpg", "b.jpg"], "valid": ["c.jpg"], "test": ["d.jpg"]}.items():
        folder = root / split / "001.Affenpinscher"
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_bytes(name.encode() * 100)
    return root


def test_upload_syncs_the_data_set_to_the_data_prefix_and_resends_only_changes(moto_account, tmp_path):
    create_bucket()
    root = make_data_set(tmp_path / "dogImages")
    c = make_context(tmp_path, bucket=BUCKET)
    c.config.data.dir = str(root)

    assert data_sync.upload(c) == f"s3://{BUCKET}/data/dogImages/"
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET)["Contents"]
    assert {item["Key"]: item["Size"] for item in listed} == {
        "data/dogImages/train/001.Affenpinscher/a.jpg": 500, "data/dogImages/train/001.Affenpinscher/b.jpg": 500,
        "data/dogImages/valid/001.Affenpinscher/c.jpg": 500, "data/dogImages/test/001.Affenpinscher/d.jpg": 500}

    (root / "train/001.Affenpinscher/a.jpg").write_bytes(b"changed")
    (root / "train/001.Affenpinscher/e.jpg").write_bytes(b"new")
    requests = RequestRecorder(boto_session(c))
    import tasks

    tasks.data(c, upload=True)
    assert sorted(put["Key"] for put in requests.of("PutObject")) == [
        "data/dogImages/train/001.Affenpinscher/a.jpg", "data/dogImages/train/001.Affenpinscher/e.jpg"]


def test_upload_without_a_local_data_set_says_to_get_it_first(moto_account, tmp_path):
    c = make_context(tmp_path, bucket=BUCKET)
    c.config.data.dir = str(tmp_path / "nothing")
    with pytest.raises(Exit, match=r"no data set at .*nothing \(it needs train/ and valid/\): run `invoke data` first"):
        data_sync.upload(c)
