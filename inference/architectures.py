"""The classifier networks: a torchvision backbone plus our own head, built the same way for training and serving.

Every model is a `Classifier` with two parts, `backbone` (image -> feature vector) and `head` (features ->
logits), so head-only training can run the backbone once, cache its features and train `head` on them; the
state_dict keys (`backbone.*`, `head.*`) are the same whichever way the model was trained.
"""

import os
import socket
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models

WEIGHT_CHOICES = ("none", "imagenet")
HEAD_HIDDEN = 256   # the original head was Linear(2048,128)-ReLU-Linear(128,classes); a little wider, with dropout
HEAD_DROPOUT = 0.2
_NETWORK_PROBE_TIMEOUT_S = 5

# arch -> (torchvision constructor, ImageNet weights, attribute that holds its classifier)
_BACKBONES = {
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2, "fc"),
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, "fc"),
    "mobilenet_v3_large": (models.mobilenet_v3_large, models.MobileNet_V3_Large_Weights.IMAGENET1K_V2, "classifier"),
    "efficientnet_b0": (models.efficientnet_b0, models.EfficientNet_B0_Weights.IMAGENET1K_V1, "classifier"),
}
ARCHITECTURES = tuple(_BACKBONES)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable; the message says what to do."""


class Classifier(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images):
        return self.head(self.backbone(images))


def _feature_size(classifier):
    if isinstance(classifier, nn.Linear):
        return classifier.in_features
    return next(layer.in_features for layer in classifier.modules() if isinstance(layer, nn.Linear))


def build_head(in_features, num_classes):
    return nn.Sequential(
        nn.Linear(in_features, HEAD_HIDDEN),
        nn.ReLU(inplace=True),
        nn.Dropout(HEAD_DROPOUT),
        nn.Linear(HEAD_HIDDEN, num_classes),
    )


def _imagenet_state_dict(arch, weights_enum):
    """The torchvision checkpoint from the hub cache, downloading it only when the host answers at once."""
    url = weights_enum.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if not cached.exists():
        host = urlparse(url).hostname
        advice = (f"ImageNet weights for {arch} are not cached and {host} cannot be reached: download {url} "
                  f"into {cached.parent} (or set TORCH_HOME), or train with --weights none")
        try:
            socket.create_connection((host, 443), timeout=_NETWORK_PROBE_TIMEOUT_S).close()
        except OSError as error:
            raise WeightsUnavailableError(f"{advice} ({error.__class__.__name__})") from None
        try:
            return weights_enum.get_state_dict(progress=True, check_hash=True)
        except (URLError, OSError, RuntimeError) as error:
            raise WeightsUnavailableError(f"{advice} ({error})") from None
    return weights_enum.get_state_dict(progress=False, check_hash=True)


def pretrained_weights_file(arch):
    """Where torch.hub caches the ImageNet checkpoint of `arch` (what to copy onto an offline machine)."""
    url = _BACKBONES[arch][1].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def build_model(arch, num_classes, weights="none"):
    """A `Classifier` for `num_classes` classes on the torchvision `arch` backbone.

    weights="imagenet" loads torchvision's ImageNet checkpoint into the backbone (from the torch.hub cache, else
    downloaded; offline it raises WeightsUnavailableError at once). weights="none" starts from random weights,
    which is also how serving builds the model before loading model.pth.
    """
    if arch not in _BACKBONES:
        raise ValueError(f"unknown arch {arch!r}: use one of {', '.join(ARCHITECTURES)}")
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"unknown weights {weights!r}: use one of {', '.join(WEIGHT_CHOICES)}")
    if int(num_classes) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    constructor, weights_enum, classifier_attr = _BACKBONES[arch]
    backbone = constructor(weights=None)
    if weights == "imagenet":
        backbone.load_state_dict(_imagenet_state_dict(arch, weights_enum))
    in_features = _feature_size(getattr(backbone, classifier_attr))
    setattr(backbone, classifier_attr, nn.Identity())
    return Classifier(backbone, build_head(in_features, int(num_classes)))


def feature_size(arch):
    """Length of the feature vector the backbone of `arch` produces."""
    constructor, _, classifier_attr = _BACKBONES[arch]
    with torch.device("meta"):
        return _feature_size(getattr(constructor(weights=None), classifier_attr))
