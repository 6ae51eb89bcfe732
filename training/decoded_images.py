"""Fine-tuning images decoded once and kept in (GPU) memory, so later epochs cost only the model.

On a GPU the data pipeline, not the model, is the limit: 16 PIL loader workers decode about 1,400 images/s, while
an H100 fine-tunes ResNet-50 at about 4,000. So each rank decodes its shard once (loader workers, progress bar)
into uint8 tensors on its device, and augmentation runs there, batched (preprocessing.augment_batch):
- training images are stored as squares of `stored_side(image_size)` pixels with their original width and height,
  so random crops are taken in the picture's own proportions;
- validation and test images are stored after eval_geometry (resize + center crop), so normalising them on the
  device gives exactly eval_transform's tensors.
"""

import logging

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor
from tqdm import tqdm

import preprocessing
from training.checkpointing import TrainingInterrupted
from training.imagefolder_data import load_image

log = logging.getLogger("train")

# Of the device memory free when training starts, at most this share goes to stored images (`--image-cache auto`);
# the rest is for the model, its activations and the optimizer.
MEMORY_SHARE = 0.4


def stored_side(image_size):
    """Side of the stored training squares: a 4:3 photo's long side at eval scale (341 px for 224)."""
    return int(round(preprocessing.resize_size(image_size) * 4 / 3))


def stored_bytes(train_count, eval_count, image_size):
    return 3 * (train_count * stored_side(image_size) ** 2 + eval_count * image_size ** 2)


def fits_in_memory(byte_count, device):
    """Whether `byte_count` bytes of images fit in the device memory share; CPU runs decode per epoch instead."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return byte_count <= MEMORY_SHARE * free


class _Decoded(torch.utils.data.Dataset):
    def __init__(self, samples, indices, image_size, for_training):
        self.samples, self.indices = samples, indices
        self.for_training, self.image_size = for_training, image_size
        self.side = stored_side(image_size)
        self.eval_geometry = torch.nn.Sequential(*preprocessing.eval_geometry(image_size))

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, position):
        path, label = self.samples[self.indices[position]]
        try:
            image = load_image(path, preprocessing.decode_side(self.image_size, self.for_training))
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
            log.warning("skipping unreadable image %s: %s", path, error)
            return None
        if self.for_training:
            source_size = image.size
            image = image.resize((self.side, self.side), Image.BILINEAR)
        else:
            source_size = (0, 0)
            image = self.eval_geometry(image)
        return pil_to_tensor(image), source_size, label, self.indices[position]


def _collate(batch):
    batch = [item for item in batch if item is not None]
    if not batch:
        return None
    images, sizes, labels, indices = zip(*batch)
    return torch.stack(images), torch.tensor(sizes, dtype=torch.float32), torch.tensor(labels), torch.tensor(indices)


class DecodedImages:
    """One split's shard in memory: uint8 `images`, `source_sizes` (width, height; training only), `labels`, and
    `indices`, each image's index in the split (on the CPU)."""

    def __init__(self, images, source_sizes, labels, indices):
        self.images, self.source_sizes, self.labels, self.indices = images, source_sizes, labels, indices

    def __len__(self):
        return len(self.labels)


def decode_shard(samples, indices, *, image_size, for_training, num_workers, device, should_stop, progress_label):
    """Decode `samples[i] for i in indices` into a DecodedImages on `device` (unreadable images left out)."""
    dataset = _Decoded(samples, indices, image_size, for_training)
    side = dataset.side if for_training else image_size
    images = torch.empty((len(indices), 3, side, side), dtype=torch.uint8, device=device)
    sizes = torch.empty((len(indices), 2), dtype=torch.float32, device=device)
    labels = torch.empty(len(indices), dtype=torch.long, device=device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=num_workers, collate_fn=_collate,
                                         pin_memory=device.type == "cuda")
    kept, kept_indices = 0, []
    for batch in tqdm(loader, desc=progress_label, disable=progress_label is None, leave=False):
        if should_stop():
            raise TrainingInterrupted("stopped while decoding images")
        if batch is None:
            continue
        batch_images, batch_sizes, batch_labels, batch_indices = batch
        count = len(batch_labels)
        images[kept:kept + count].copy_(batch_images, non_blocking=True)
        sizes[kept:kept + count].copy_(batch_sizes, non_blocking=True)
        labels[kept:kept + count].copy_(batch_labels, non_blocking=True)
        kept_indices.append(batch_indices)
        kept += count
    indices = torch.cat(kept_indices) if kept_indices else torch.empty(0, dtype=torch.long)
    return DecodedImages(images[:kept], sizes[:kept], labels[:kept], indices)
