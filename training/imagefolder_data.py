"""ImageFolder data sets with train/valid/test splits, bad images skipped, and per-sample seeded augmentation.

Layout: <data>/train/<class>/<image>, <data>/valid/<class>/..., optionally <data>/test/<class>/...
The classes are the folders of train/; valid and test may hold a subset of them.
"""

import logging
import re
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

import preprocessing

log = logging.getLogger("train")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPLITS = ("train", "valid", "test")
REQUIRED_SPLITS = ("train", "valid")
_NUMBERED = re.compile(r"^\d+[._\- ]+")


class DataError(ValueError):
    """The data folder cannot be used as it is; the message says what is wrong and what to do."""


def clean_class_name(folder_name):
    """`001.Affenpinscher` -> `Affenpinscher`, `003.Airedale_terrier` -> `Airedale terrier`."""
    name = _NUMBERED.sub("", folder_name).replace("_", " ").strip()
    return name or folder_name


def _image_files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class SplitSamples:
    """The (path, class index) list of one split."""

    def __init__(self, name, samples):
        self.name = name
        self.samples = samples

    def __len__(self):
        return len(self.samples)


class DataSplits:
    def __init__(self, root, class_folders, splits):
        self.root = root
        self.class_folders = class_folders
        self.class_names = [clean_class_name(folder) for folder in class_folders]
        self.splits = splits   # name -> SplitSamples, only the splits that exist

    def identity(self):
        """What a checkpoint or feature cache must match: classes and every file with its size and mtime."""
        files = []
        for name in sorted(self.splits):
            for path, label in self.splits[name].samples:
                stat = path.stat()
                files.append((name, str(path.relative_to(self.root)), label, stat.st_size, stat.st_mtime_ns))
        return {"classes": self.class_folders, "files": files}


def scan_data(root):
    """Index `root`'s splits; raises DataError with one line when the layout cannot be trained on."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist: run `invoke data` (or `invoke data --synthetic`) "
                        f"or pass --data <folder with train/ and valid/>")
    missing = [split for split in REQUIRED_SPLITS if not (root / split).is_dir()]
    if missing:
        raise DataError(f"data folder {root} has no {' or '.join(s + '/' for s in missing)} split: "
                        f"expected {root}/train/<class>/<image> and {root}/valid/<class>/<image>")
    class_folders = sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_folders) < 2:
        raise DataError(f"{root}/train has {len(class_folders)} class folder(s): a classifier needs at least 2")
    index = {folder: i for i, folder in enumerate(class_folders)}
    splits = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        folders = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        unknown = [p.name for p in folders if p.name not in index]
        if unknown:
            raise DataError(f"{split_dir} has class folder(s) not in train/: {', '.join(unknown[:5])}")
        samples = [(path, index[folder.name]) for folder in folders for path in _image_files(folder)]
        if split == "train":
            empty = [folder for folder in class_folders if not _image_files(split_dir / folder)]
            if empty:
                raise DataError(f"{split_dir} class folder(s) without images: {', '.join(empty[:5])}")
        if not samples:
            raise DataError(f"{split_dir} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        splits[split] = SplitSamples(split, samples)
    names = [clean_class_name(folder) for folder in class_folders]
    if len(set(names)) != len(names):
        raise DataError(f"class folders of {root}/train give duplicate class names after cleaning numbering")
    return DataSplits(root, class_folders, splits)


def load_image(path, min_side=None):
    """The picture at `path`, upright RGB; a big JPEG decoded at reduced scale when `min_side` is given (the way
    serving decodes it: preprocessing.reduce_on_load)."""
    with Image.open(path) as image:
        if min_side:
            preprocessing.reduce_on_load(image, min_side)
        image.load()
        return preprocessing.to_rgb(image)


class ImageSamples(torch.utils.data.Dataset):
    """Decoded, transformed images; an unreadable image yields None (reported once by path) and is skipped.

    With `seed` set, the random augmentation of sample i in epoch e is seeded from (seed, e, i), so it does not
    depend on how many loader workers or distributed ranks share the work, nor on where a resumed run restarts.
    """

    def __init__(self, samples, transform, seed=None, min_side=None):
        self.samples = samples
        self.transform = transform
        self.seed = seed
        self.min_side = min_side
        self.epoch = 0

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        try:
            image = load_image(path, self.min_side)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
            log.warning("skipping unreadable image %s: %s", path, error)
            return None
        if self.seed is None:
            tensor = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 1_000_003 + self.epoch * 10_007 + index) % (2**63))
                tensor = self.transform(image)
        return tensor, label, index


def collate_skipping_bad(batch):
    """Default collation of the readable samples: (images, labels, indices), or None if none was readable."""
    batch = [item for item in batch if item is not None]
    if not batch:
        return None
    images, labels, indices = zip(*batch)
    return torch.stack(images), torch.tensor(labels), torch.tensor(indices)
