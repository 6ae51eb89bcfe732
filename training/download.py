"""Get the real data set: resumable HTTP download, size check, archive check, atomic unzip; a no-op when done.

    python training/download.py [--url URL] [--data-dir data/dogImages]
"""

import argparse
import logging
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from tqdm import tqdm

COMPLETE_MARKER = ".complete"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30

log = logging.getLogger("download")


class DownloadError(RuntimeError):
    """The data set could not be fetched or unpacked; the message says what to do."""


def _total_from_content_range(header):
    match = re.match(r"bytes (?:\d+-\d+|\*)/(\d+)", header or "")
    return int(match.group(1)) if match else None


def download(url, destination, *, progress=False, timeout=TIMEOUT_S):
    """Fetch `url` into `destination`, resuming `<destination>.part` with a Range request; returns the path.

    The size received is checked against what the server announced; a short file stays as .part to resume.
    """
    destination = Path(destination)
    if destination.exists():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urlopen(request, timeout=timeout)
    except HTTPError as error:
        if error.code == 416 and offset and _total_from_content_range(error.headers.get("Content-Range")) == offset:
            os.replace(part, destination)      # the partial file was already complete
            return destination
        raise DownloadError(f"download of {url} failed: HTTP {error.code} {error.reason}") from None
    except (URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"cannot download {url} ({reason}): check the network, or point data.url "
                            f"(invoke data --url) at a reachable copy") from None
    with response:
        if offset and response.status == 206:
            total = _total_from_content_range(response.headers.get("Content-Range"))
            mode = "ab"
            log.info("resuming %s at %d bytes", destination.name, offset)
        else:
            offset, mode = 0, "wb"             # the server ignored the Range header: start over
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
        received = offset
        with open(part, mode) as handle, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                               desc=destination.name, disable=not progress) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except OSError as error:
                    raise DownloadError(f"download of {url} interrupted at {received} bytes ({error}): "
                                        f"run again to resume") from None
                if not chunk:
                    break
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise DownloadError(f"download of {url} stopped at {received} of {total} bytes: run again to resume")
    os.replace(part, destination)
    return destination


def _data_root(extracted):
    """The folder that holds train/: the archive's top level or its single top folder (dogImages/)."""
    if (extracted / "train").is_dir():
        return extracted
    candidates = [p for p in extracted.iterdir() if p.is_dir() and not p.name.startswith(("__MACOSX", "."))]
    for candidate in candidates:
        if (candidate / "train").is_dir():
            return candidate
    raise DownloadError(f"the archive has no train/ folder (top level: {', '.join(p.name for p in candidates)})")


def unpack(archive, data_dir):
    """Check every member's CRC, extract next to `data_dir`, then move the result into place in one rename."""
    archive, data_dir = Path(archive), Path(data_dir)
    try:
        with zipfile.ZipFile(archive) as zipped:
            bad = zipped.testzip()
            if bad is not None:
                raise zipfile.BadZipFile(f"CRC mismatch in {bad}")
            staging = data_dir.with_name(f".{data_dir.name}.extract")
            shutil.rmtree(staging, ignore_errors=True)
            zipped.extractall(staging)
    except (zipfile.BadZipFile, EOFError) as error:
        archive.unlink()
        raise DownloadError(f"{archive} is corrupt ({error}); it was deleted: run again to download it anew") \
            from None
    root = _data_root(staging)
    (root / COMPLETE_MARKER).write_text(archive.name + "\n")
    if data_dir.exists():
        shutil.rmtree(data_dir)       # an earlier unpacking that never completed
    os.replace(root, data_dir)
    shutil.rmtree(staging, ignore_errors=True)
    return data_dir


def is_complete(data_dir):
    return (Path(data_dir) / COMPLETE_MARKER).exists() and (Path(data_dir) / "train").is_dir()


def fetch_dataset(url, data_dir, *, progress=False, keep_archive=False):
    """Make `data_dir` hold the unpacked data set from `url`; returns (data_dir, whether anything was done)."""
    data_dir = Path(data_dir)
    if is_complete(data_dir):
        return data_dir, False
    name = os.path.basename(urlparse(url).path) or "dataset.zip"
    archive = download(url, data_dir.parent / name, progress=progress)
    unpack(archive, data_dir)
    if not keep_archive:
        archive.unlink()
    return data_dir, True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from configuration.areas import DataSettings, load   # the defaults of `invoke data`: data.url, data.dir

    defaults = load({}, DataSettings)
    parser.add_argument("--url", default=defaults.url, help="zip archive with train/ valid/ test/")
    parser.add_argument("--data-dir", default=str(defaults.dir), help="where the data set is unpacked")
    parser.add_argument("--keep-archive", action="store_true", help="keep the zip after unpacking")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        data_dir, fetched = fetch_dataset(args.url, args.data_dir, progress=sys.stderr.isatty(),
                                          keep_archive=args.keep_archive)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{data_dir}: {'downloaded and unpacked' if fetched else 'already there'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
