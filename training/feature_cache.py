"""Backbone features computed once per split and reused by every head-mode epoch (and by later runs).

The cache key covers the backbone's exact weights, the image size and the split's files (names, sizes, mtimes),
so a different model, weights or data never reads stale features. Under torchrun each rank extracts and keeps
only its own shard (every world_size-th image from its rank on).
"""

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from tqdm import tqdm

import preprocessing
from training.checkpointing import TrainingInterrupted
from training.imagefolder_data import ImageSamples, collate_skipping_bad

log = logging.getLogger("train")


def backbone_digest(backbone):
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(arch, weights_digest, image_size, split_identity):
    text = json.dumps({"arch": arch, "backbone": weights_digest, "image_size": image_size,
                       "transform": "eval_transform/v2", "files": split_identity}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@torch.inference_mode()
def extract_features(backbone, samples, indices, *, image_size, batch_size, num_workers, device, autocast,
                     channels_last, should_stop, progress_label):
    """Features, labels and sample indices of `indices` (unreadable images left out)."""
    dataset = torch.utils.data.Subset(ImageSamples(samples, preprocessing.eval_transform(image_size),
                                                   min_side=preprocessing.decode_side(image_size)), indices)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=collate_skipping_bad, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(0))
    features, labels, kept = [], [], []
    for batch in tqdm(loader, desc=progress_label, disable=progress_label is None, leave=False):
        if should_stop():
            raise TrainingInterrupted("stopped during feature extraction")
        if batch is None:
            continue
        images, batch_labels, batch_indices = batch
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            output = backbone(images)
        features.append(output.float().cpu())
        labels.append(batch_labels)
        kept.append(batch_indices)
    if not features:
        return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(features), torch.cat(labels), torch.cat(kept)


def cached_features(cache_dir, key, split, rank, world_size, compute):
    """Load this shard's features from the cache, or compute and store them (atomically)."""
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{key}-{split}-shard{rank}of{world_size}.pt"
    if path.exists():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            log.info("%s features loaded from cache %s", split, path)
            return stored["features"], stored["labels"], stored["indices"], True
        except Exception as error:  # a torn or foreign file is recomputed, not trusted
            log.warning("feature cache %s unreadable (%s); recomputing", path, error)
    features, labels, indices = compute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"features": features, "labels": labels, "indices": indices}, tmp)
    os.replace(tmp, path)
    return features, labels, indices, False
