"""A small learnable ImageFolder set, generated on the spot (no network): shapes with their own colours and textures.

Each class is a shape drawn in a colour family with a texture, at a random place, size and rotation, on a noisy
background with a distractor line and pixel noise. Folders are numbered like dogImages (`001.Red_circle`) so
the same class-name cleaning applies. The same seed always gives the same files.
"""

import argparse
import concurrent.futures
import json
import math
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

# name, base RGB colour, shape, texture
CLASSES = [
    ("Red_circle", (215, 45, 40), "circle", "plain"),
    ("Green_square", (40, 170, 60), "square", "stripes"),
    ("Blue_triangle", (40, 70, 210), "triangle", "dots"),
    ("Yellow_star", (230, 200, 40), "star", "plain"),
    ("Magenta_ring", (200, 50, 190), "ring", "checks"),
    ("Cyan_cross", (40, 200, 210), "cross", "stripes"),
]
SPLIT_SIZES = {"train": 60, "valid": 15, "test": 15}   # images per class
MARKER = ".synthetic.json"


def _polygon(shape, cx, cy, r, angle):
    if shape == "square":
        points = [(math.cos(angle + k * math.pi / 2), math.sin(angle + k * math.pi / 2)) for k in range(4)]
    elif shape == "triangle":
        points = [(math.cos(angle + k * 2 * math.pi / 3), math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
    elif shape == "star":
        points = [((1 if k % 2 == 0 else 0.45) * math.cos(angle + k * math.pi / 5),
                   (1 if k % 2 == 0 else 0.45) * math.sin(angle + k * math.pi / 5)) for k in range(10)]
    elif shape == "cross":
        arm = 0.33
        base = [(-arm, -1), (arm, -1), (arm, -arm), (1, -arm), (1, arm), (arm, arm), (arm, 1), (-arm, 1),
                (-arm, arm), (-1, arm), (-1, -arm), (-arm, -arm)]
        points = [(x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle))
                  for x, y in base]
    else:
        raise ValueError(shape)
    return [(cx + r * x, cy + r * y) for x, y in points]


def _texture(size, kind, colour, rng):
    """An RGB texture image in the class colour."""
    dark = tuple(max(0, int(c * 0.55)) for c in colour)
    image = Image.new("RGB", (size, size), colour)
    draw = ImageDraw.Draw(image)
    step = max(3, size // rng.randint(6, 10))
    if kind == "stripes":
        for offset in range(-size, 2 * size, step * 2):
            draw.polygon([(offset, 0), (offset + step, 0), (offset + step - size, size), (offset - size, size)],
                         fill=dark)
    elif kind == "dots":
        for x in range(step // 2, size, step):
            for y in range(step // 2, size, step):
                draw.ellipse([x - step / 4, y - step / 4, x + step / 4, y + step / 4], fill=dark)
    elif kind == "checks":
        for x in range(0, size, step):
            for y in range(0, size, step):
                if (x // step + y // step) % 2:
                    draw.rectangle([x, y, x + step - 1, y + step - 1], fill=dark)
    return image


def _jitter(colour, rng, amount=35):
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in colour)


def draw_sample(class_index, size, rng, np_rng):
    _, colour, shape, texture = CLASSES[class_index]
    background = np_rng.integers(60, 200, size=3)
    pixels = np.clip(background + np_rng.normal(0, 18, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    # a distractor line in a random colour, so colour blobs alone are not the whole story
    draw.line([(rng.uniform(0, size), rng.uniform(0, size)), (rng.uniform(0, size), rng.uniform(0, size))],
              fill=tuple(rng.randint(0, 255) for _ in range(3)), width=max(1, size // 32))
    r = rng.uniform(0.22, 0.38) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    mask = Image.new("L", (size, size), 0)
    mask_draw = ImageDraw.Draw(mask)
    if shape == "circle":
        mask_draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "ring":
        mask_draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        mask_draw.ellipse([cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55], fill=0)
    else:
        mask_draw.polygon(_polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=255)
    image.paste(_texture(size, texture, _jitter(colour, rng), rng), mask=mask)
    noisy = np.asarray(image, dtype=np.float32) + np_rng.normal(0, 10, (size, size, 3))
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return image


def _draw_folder(tmp, split_number, split, class_index, per_class, image_size, seed):
    folder = tmp / split / f"{class_index + 1:03d}.{CLASSES[class_index][0]}"
    folder.mkdir(parents=True)
    for number in range(per_class):
        sample_seed = (seed * 1_000_003 + split_number * 10_007 + class_index * 1_009 + number)
        rng, np_rng = random.Random(sample_seed), np.random.default_rng(sample_seed)
        draw_sample(class_index, image_size, rng, np_rng).save(
            folder / f"{split}_{class_index + 1:03d}_{number:04d}.jpg", quality=90)
    return per_class


def make_synthetic_dataset(root, *, classes=len(CLASSES), split_sizes=None, image_size=128, seed=0,
                           progress=False, workers=1):
    """Create the set under `root` (train/ valid/ test/); a no-op when the same set is already there.

    `workers` > 1 draws the class folders in that many processes (the files are the same either way).
    """
    root = Path(root)
    split_sizes = dict(split_sizes or SPLIT_SIZES)
    if not 2 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be between 2 and {len(CLASSES)}, got {classes}")
    spec = {"classes": classes, "split_sizes": split_sizes, "image_size": image_size, "seed": seed, "version": 1}
    marker = root / MARKER
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return root
    if root.exists() and any(root.iterdir()) and not marker.exists():
        raise FileExistsError(f"{root} exists and is not a synthetic data set: remove it or choose another folder")
    tmp = root.with_name(f".{root.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    folders = [(tmp, split_number, split, class_index, per_class, image_size, seed)
               for split_number, (split, per_class) in enumerate(split_sizes.items())
               for class_index in range(classes)]
    with tqdm(total=classes * sum(split_sizes.values()), desc="synthetic images", disable=not progress) as bar:
        if workers > 1:
            with concurrent.futures.ProcessPoolExecutor(workers) as pool:
                for count in pool.map(_draw_folder, *zip(*folders)):
                    bar.update(count)
        else:
            for folder in folders:
                bar.update(_draw_folder(*folder))
    (tmp / MARKER).write_text(json.dumps(spec))
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root)
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description="Make the synthetic shapes data set.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("root", nargs="?", default="data/synthetic", help="where to create it")
    parser.add_argument("--classes", type=int, default=len(CLASSES), help="number of classes (2-6)")
    parser.add_argument("--image-size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    print(make_synthetic_dataset(args.root, classes=args.classes, image_size=args.image_size, seed=args.seed,
                                 progress=sys.stderr.isatty()))


if __name__ == "__main__":
    main()
