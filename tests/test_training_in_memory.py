"""Fine-tuning on images decoded once into (GPU) memory: the batched augmentation must be train_transform's recipe,
evaluation must see exactly eval_transform's tensors, and the training run must keep its guarantees (resume after
SIGTERM, shards under torchrun, unreadable images skipped). Run on CPU here; the same code runs on a GPU."""

import math
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torchvision import transforms
from torchvision.transforms import functional as TF
from torchvision.transforms.functional import pil_to_tensor

import preprocessing
from training import train
from training.decoded_images import stored_side
from training_testlib import (TRAIN_SCRIPT, assert_report_is_what_the_model_scores, assert_same_history, history,
                              run_two_processes, sigterm_after_first_epoch, tiny_args)


def smooth_picture(width, height):
    """Gradients and a soft blob: resampling differences stay small, geometry and colour mistakes do not."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    picture = Image.fromarray(np.stack([x, y, 255 - x], axis=2).astype(np.uint8))
    ImageDraw.Draw(picture).ellipse((width * 0.55, height * 0.2, width * 0.9, height * 0.7), fill=(250, 240, 30))
    return picture.filter(ImageFilter.GaussianBlur(3))


def reference_augmentation(picture, box, flip, factors, image_size):
    """train_transform's steps, one picture at a time, with torchvision's functional ops and the given draws."""
    x0, y0, x1, y1 = (float(v) for v in box)
    crop = TF.resized_crop(pil_to_tensor(picture).float() / 255, top=round(y0), left=round(x0),
                           height=round(y1 - y0), width=round(x1 - x0), size=[image_size, image_size],
                           antialias=True)
    if flip:
        crop = TF.hflip(crop)
    crop = TF.adjust_brightness(crop, float(factors[0]))
    crop = TF.adjust_contrast(crop, float(factors[1]))
    crop = TF.adjust_saturation(crop, float(factors[2]))
    return TF.normalize(crop, preprocessing.IMAGENET_MEAN, preprocessing.IMAGENET_STD)


def test_batched_augmentation_matches_torchvision_on_the_original_pictures():
    image_size = 48
    side = stored_side(image_size)
    pictures = [smooth_picture(120, 80), smooth_picture(90, 120)] * 4          # landscape and portrait
    stored = torch.stack([pil_to_tensor(p.resize((side, side), Image.BILINEAR)) for p in pictures])
    sizes = torch.tensor([p.size for p in pictures], dtype=torch.float32)
    drawn = preprocessing.draw_augmentation(sizes, torch.Generator().manual_seed(3))
    boxes, flips, factors = drawn
    assert flips.any() and not flips.all()

    batched = preprocessing.apply_augmentation(stored, sizes, drawn, image_size)
    assert batched.shape == (8, 3, image_size, image_size) and batched.dtype == torch.float32
    for i, picture in enumerate(pictures):
        expected = reference_augmentation(picture, boxes[i], flips[i], factors[i], image_size)
        assert (batched[i] - expected).abs().mean() < 0.06, i
        mirrored = reference_augmentation(picture, boxes[i], not flips[i], factors[i], image_size)
        assert (batched[i] - mirrored).abs().mean() > 0.15, i      # the comparison can tell a wrong flip apart


def test_crops_are_drawn_like_random_resized_crop():
    sizes = torch.tensor([[400, 300]] * 2000 + [[100, 400]] * 10, dtype=torch.float32)
    boxes = preprocessing.crop_boxes(sizes, torch.Generator().manual_seed(0))
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= sizes[:, 0] + 1e-3).all()
    assert (boxes[:, 3] <= sizes[:, 1] + 1e-3).all()
    area = (width * height / (sizes[:, 0] * sizes[:, 1]))[:2000]
    ratio = (width / height)[:2000]
    assert area.min() >= preprocessing.CROP_SCALE[0] - 1e-4 and area.max() <= 1 + 1e-4
    assert ratio.min() >= preprocessing.CROP_RATIO[0] - 1e-3 and ratio.max() <= preprocessing.CROP_RATIO[1] + 1e-3

    torch.manual_seed(0)
    crop = transforms.RandomResizedCrop(32, scale=preprocessing.CROP_SCALE, ratio=preprocessing.CROP_RATIO)
    picture = torch.zeros(3, 300, 400)
    reference = [crop.get_params(picture, crop.scale, crop.ratio) for _ in range(2000)]
    reference_area = torch.tensor([h * w / (300 * 400) for _, _, h, w in reference])
    assert abs(area.mean() - reference_area.mean()) < 0.02
    # a 1:4 strip fits no crop of the allowed shapes: the same center-crop fallback as torchvision's
    assert torch.allclose(boxes[2000], torch.tensor([0.0, 200 - 100 / 0.75 / 2, 100.0, 200 + 100 / 0.75 / 2]))


def test_evaluation_images_normalised_in_memory_equal_eval_transform():
    picture = smooth_picture(150, 100)
    geometry = transforms.Compose(preprocessing.eval_geometry(64))
    in_memory = preprocessing.normalize_batch(pil_to_tensor(geometry(picture)).unsqueeze(0))[0]
    assert torch.allclose(in_memory, preprocessing.eval_transform(64)(picture), atol=1e-6)


def test_the_same_draw_gives_the_same_batch():
    stored = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    sizes = torch.tensor([[60, 40]] * 4, dtype=torch.float32)
    first = preprocessing.augment_batch(stored, sizes, 32, torch.Generator().manual_seed(1))
    again = preprocessing.augment_batch(stored, sizes, 32, torch.Generator().manual_seed(1))
    other = preprocessing.augment_batch(stored, sizes, 32, torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other)


# --- train.py with --image-cache memory --------------------------------------------------------------------------

def in_memory_args(data, work, *extra):
    return tiny_args(data, work, "--mode", "finetune", "--image-cache", "memory", *extra)


def run_script(args, timeout=300):
    return subprocess.run([sys.executable, str(TRAIN_SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=timeout)


def test_in_memory_run_resumes_after_sigterm_like_an_uninterrupted_one(tiny_image_folder, tmp_path):
    whole = tmp_path / "whole"
    report = train.main(train.parse_args(in_memory_args(tiny_image_folder, whole, "--epochs", "3")))
    assert report["settings"]["image_cache"] == "memory"
    assert report["image_decode_seconds"] >= 0
    assert all(row["images_per_second"] > 0 for row in report["history"])

    work = tmp_path / "interrupted"
    args = in_memory_args(tiny_image_folder, work, "--epochs", "3")
    lines = sigterm_after_first_epoch(args)
    assert "images decoded into cpu memory" in "".join(lines)

    switched = run_script(tiny_args(tiny_image_folder, work, "--mode", "finetune", "--epochs", "3",
                                    "--image-cache", "off"))
    assert switched.returncode == 2 and "other image_cache" in switched.stderr    # other augmentation: no resume

    resumed = run_script(args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from the checkpoint" in resumed.stdout
    assert_same_history(history(work), history(whole))


def test_two_torchrun_processes_each_decode_and_train_on_their_half(tiny_image_folder, tmp_path):
    result, report = run_two_processes(in_memory_args(tiny_image_folder, tmp_path, "--epochs", "1"), tmp_path)
    assert report["world_size"] == 2
    assert report["train_samples_per_rank"] == [12, 12]          # 24 training images, half each
    assert "images decoded into cpu memory" in result.stdout and "train 12," in result.stdout
    assert assert_report_is_what_the_model_scores(tmp_path, tiny_image_folder)["images"] == 12    # both halves


def test_unreadable_images_are_reported_and_left_out_of_memory(tiny_image_folder, tmp_path, capsys):
    import shutil

    data = shutil.copytree(tiny_image_folder, tmp_path / "data")
    broken = sorted((data / "train" / "003.Blue_triangle").iterdir())[0]
    broken.write_bytes(b"not an image")
    report = train.main(train.parse_args(in_memory_args(data, tmp_path, "--epochs", "1", "--batch-size", "8")))
    assert f"skipping unreadable image {broken}" in capsys.readouterr().out
    assert report["train_samples_per_rank"] == [23]


def test_auto_keeps_decoding_per_epoch_on_a_cpu(tiny_image_folder, tmp_path):
    report = train.main(train.parse_args(tiny_args(tiny_image_folder, tmp_path, "--mode", "finetune",
                                                   "--epochs", "1")))
    assert report["settings"]["image_cache"] == "off" and "image_decode_seconds" not in report
    assert math.isfinite(report["history"][0]["images_per_second"])
