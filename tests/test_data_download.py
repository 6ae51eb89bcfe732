"""Getting the data set: `invoke data` / download.py and ec2-data-download.sh against a zip served on 127.0.0.1,
and `invoke data --synthetic`. The loopback server stands in for the course bucket (the only fake here)."""

import io
import os
import re
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from training import download
from training import synthetic

REPO_ROOT = Path(__file__).resolve().parent.parent
INVOKE = Path(sys.executable).with_name("invoke")


def make_zip(layout_root="dogImages/"):
    """A small archive laid out like dogImages.zip: dogImages/{train,valid,test}/<class>/<image>.jpg."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for split in ("train", "valid", "test"):
            for folder in ("001.Affenpinscher", "002.Afghan_hound"):
                for number in range(3):
                    payload = f"{split}/{folder}/{number}".encode() * 500
                    archive.writestr(f"{layout_root}{split}/{folder}/{folder[4:]}_{number:05d}.jpg", payload)
        archive.writestr("__MACOSX/._junk", b"")
    return buffer.getvalue()


class ZipServer:
    """Serves one body at /dogImages.zip with Range support; records the requests; can cut a response short."""

    def __init__(self, body):
        self.body = body
        self.requests = []
        self.cut_after = None          # bytes sent before the connection drops, once
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()

            def do_GET(self):
                server.requests.append(dict(self.headers))
                if self.path != "/dogImages.zip":
                    self.send_error(404)
                    return
                start = 0
                match = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if match:
                    start = int(match.group(1))
                    if start >= len(server.body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(server.body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(server.body) - 1}/{len(server.body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(server.body) - start))
                self.end_headers()
                payload = server.body[start:]
                if server.cut_after is not None:
                    payload, server.cut_after = payload[:server.cut_after], None
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dogImages.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served():
    server = ZipServer(make_zip())
    yield server
    server.close()


def test_download_unpacks_the_data_set_and_a_second_run_does_nothing(served, tmp_path):
    data_dir, fetched = download.fetch_dataset(served.url, tmp_path / "data" / "dogImages")
    assert fetched
    assert sorted(p.name for p in data_dir.iterdir() if not p.name.startswith(".")) == ["test", "train", "valid"]
    assert len(list((data_dir / "train" / "001.Affenpinscher").iterdir())) == 3
    assert not (tmp_path / "data" / "dogImages.zip").exists()            # unpacked, archive removed
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["dogImages"]  # no staging left behind

    requests = len(served.requests)
    assert download.fetch_dataset(served.url, data_dir) == (data_dir, False)
    assert len(served.requests) == requests


def test_an_interrupted_download_resumes_where_it_stopped(served, tmp_path):
    served.cut_after = len(served.body) // 3
    with pytest.raises(download.DownloadError, match="run again to resume"):
        download.fetch_dataset(served.url, tmp_path / "dogImages")
    part = tmp_path / "dogImages.zip.part"
    assert part.stat().st_size == len(served.body) // 3

    data_dir, fetched = download.fetch_dataset(served.url, tmp_path / "dogImages")
    assert fetched and (data_dir / "valid" / "002.Afghan_hound").is_dir()
    assert served.requests[-1]["Range"] == f"bytes={len(served.body) // 3}-"


def test_a_corrupt_archive_is_rejected_and_deleted(tmp_path):
    body = bytearray(make_zip())
    body[200:260] = b"\0" * 60           # damage a member's bytes: the CRC check must notice
    server = ZipServer(bytes(body))
    try:
        with pytest.raises(download.DownloadError, match="corrupt .* run again to download it anew"):
            download.fetch_dataset(server.url, tmp_path / "dogImages")
    finally:
        server.close()
    assert not (tmp_path / "dogImages").exists()
    assert not (tmp_path / "dogImages.zip").exists()


def test_an_unreachable_or_missing_archive_is_one_line(served, tmp_path):
    with pytest.raises(download.DownloadError) as missing:
        download.fetch_dataset(served.url.replace("dogImages.zip", "nothing.zip"), tmp_path / "d")
    assert "HTTP 404" in str(missing.value) and "\n" not in str(missing.value)
    with pytest.raises(download.DownloadError, match="cannot download .* check the network"):
        download.fetch_dataset("http://127.0.0.1:9/dogImages.zip", tmp_path / "d")


def _invoke(*args, env=None):
    return subprocess.run([str(INVOKE), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_invoke_data_downloads_from_the_configured_url(served, tmp_path):
    env = {"INVOKE_DATA_URL": served.url, "INVOKE_DATA_DIR": str(tmp_path / "dogImages")}
    first = _invoke("data", env=env)
    assert first.returncode == 0, first.stderr
    assert "downloaded and unpacked" in first.stdout
    again = _invoke("data", env=env)
    assert "already there" in again.stdout


def test_invoke_data_synthetic_makes_a_learnable_layout(tmp_path):
    result = _invoke("data", "--synthetic", env={"INVOKE_DATA_SYNTHETIC_DIR": str(tmp_path / "synthetic")})
    assert result.returncode == 0, result.stderr
    root = tmp_path / "synthetic"
    for split, per_class in synthetic.SPLIT_SIZES.items():
        folders = sorted(p.name for p in (root / split).iterdir())
        assert folders == [f"{i + 1:03d}.{name}" for i, (name, *_) in enumerate(synthetic.CLASSES)]
        assert all(len(list((root / split / f).iterdir())) == per_class for f in folders)


def test_the_synthetic_set_is_the_same_for_the_same_seed(tmp_path):
    sizes = {"train": 2, "valid": 1, "test": 1}
    one = synthetic.make_synthetic_dataset(tmp_path / "a", classes=2, split_sizes=sizes, image_size=32, seed=3)
    two = synthetic.make_synthetic_dataset(tmp_path / "b", classes=2, split_sizes=sizes, image_size=32, seed=3)
    files = sorted(p.relative_to(one) for p in one.rglob("*.jpg"))
    assert len(files) == 8
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)


def test_ec2_script_downloads_resumes_and_is_idempotent(served, tmp_path):
    script = REPO_ROOT / "training" / "ec2-data-download.sh"
    env = {**os.environ, "DATA_URL": served.url, "DATA_ROOT": str(tmp_path / "data"),
           "MODEL_DIR": str(tmp_path / "model")}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dogImages.zip.part").write_bytes(served.body[:1000])   # an earlier, interrupted try

    first = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "data" / "dogImages" / "train" / "002.Afghan_hound").is_dir()
    assert (tmp_path / "model").is_dir()
    assert any(r.get("Range") == "bytes=1000-" for r in served.requests)

    second = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "nothing to do" in second.stdout


def test_ec2_script_fails_loudly_on_a_corrupt_archive(tmp_path):
    body = bytearray(make_zip())
    body[200:260] = b"\0" * 60
    server = ZipServer(bytes(body))
    try:
        env = {**os.environ, "DATA_URL": server.url, "DATA_ROOT": str(tmp_path), "MODEL_DIR": str(tmp_path / "m")}
        result = subprocess.run(["bash", str(REPO_ROOT / "training" / "ec2-data-download.sh")], capture_output=True,
                                text=True, timeout=120, env=env)
    finally:
        server.close()
    assert result.returncode != 0
    assert "corrupt" in result.stderr and not (tmp_path / "dogImages").exists()
