"""The one definition of how an image becomes a model input, shared by training and serving.

inference.py imports this module from the model's code/ folder and training imports it from inference/, so the
transform a model was trained with is the transform it is served with: they cannot drift apart.
"""

import math

import torch
from PIL import Image, ImageOps
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224
# torchvision's ImageNet recipe resizes the short side to 256 before a 224 crop; keep that ratio at any size.
RESIZE_RATIO = 256 / 224

_WHITE = (255, 255, 255)


def resize_size(image_size=DEFAULT_IMAGE_SIZE):
    """Short-side length the image is resized to before the center crop of `image_size`."""
    return int(round(image_size * RESIZE_RATIO))


def decode_side(image_size=DEFAULT_IMAGE_SIZE, for_training=False):
    """The short side a picture must keep when decoded for `image_size` inputs: the eval resize's, or for training
    more, so that the smallest random crop (CROP_SCALE[0] of the area) is not upscaled."""
    side = resize_size(image_size)
    return math.ceil(side / math.sqrt(CROP_SCALE[0])) if for_training else side


def reduce_on_load(image, min_side):
    """Have a JPEG decode at the largest DCT downscale (1/2, 1/4, 1/8) that keeps both sides >= `min_side`, which
    makes a 12-megapixel photo cost little more than a small one. Call it before image.load(). Training and
    serving both decode this way, so a large photo is the same input to the model in both."""
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB", (min_side, min_side))
    return image


def eval_geometry(image_size=DEFAULT_IMAGE_SIZE):
    """The PIL part of the eval transform: short side to resize_size, then the center crop of `image_size`."""
    return [transforms.Resize(resize_size(image_size)), transforms.CenterCrop(image_size)]


def eval_transform(image_size=DEFAULT_IMAGE_SIZE):
    """Resize, center crop, tensor, ImageNet normalization: what every validation, test and served image gets."""
    return transforms.Compose([*eval_geometry(image_size), transforms.ToTensor(),
                               transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


# The fine-tuning augmentation recipe, shared by the per-image transform (CPU loaders) and the batched one (images
# decoded once into GPU memory).
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.2    # brightness, contrast and saturation factors drawn from [1 - JITTER, 1 + JITTER]


def train_transform(image_size=DEFAULT_IMAGE_SIZE):
    """Augmented variant for fine-tuning; it ends in the same tensor conversion and normalization as eval."""
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=CROP_SCALE, ratio=CROP_RATIO),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


_GREY_WEIGHTS = (0.299, 0.587, 0.114)
_device_constants = {}


def _constants(device):
    """Per-device tensors of the normalization and grey weights, made once: building them each batch would copy
    from host memory every step, and such a copy waits for the GPU to finish its queued work."""
    if device not in _device_constants:
        _device_constants[device] = tuple(torch.tensor(values, device=device).view(1, 3, 1, 1) for values in
                                          (IMAGENET_MEAN, IMAGENET_STD, _GREY_WEIGHTS))
    return _device_constants[device]


def normalize_batch(images):
    """uint8 (N, 3, H, W) images -> the float tensor eval_transform makes of each (ToTensor + Normalize)."""
    mean, std, _ = _constants(images.device)
    return (images.float() / 255 - mean) / std


def crop_boxes(source_sizes, generator):
    """RandomResizedCrop's crop (x0, y0, x1, y1) for each (width, height) in `source_sizes`, drawn for a whole
    batch at once: 10 tries each, then the same center-crop fallback."""
    n, device = len(source_sizes), source_sizes.device
    width, height = source_sizes[:, 0:1], source_sizes[:, 1:2]
    tries = 10
    area = width * height * torch.empty(n, tries, device=device).uniform_(*CROP_SCALE, generator=generator)
    log_ratio = torch.empty(n, tries, device=device).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]),
                                                             generator=generator)
    crop_w, crop_h = (area * log_ratio.exp()).sqrt(), (area / log_ratio.exp()).sqrt()
    fits = (crop_w <= width) & (crop_h <= height)
    first = fits.float().argmax(dim=1, keepdim=True)
    crop_w, crop_h = crop_w.gather(1, first), crop_h.gather(1, first)
    aspect = width / height
    fallback_w = torch.where(aspect > CROP_RATIO[1], height * CROP_RATIO[1], width)
    fallback_h = torch.where(aspect < CROP_RATIO[0], width / CROP_RATIO[0], height)
    found = fits.any(dim=1, keepdim=True)
    crop_w, crop_h = torch.where(found, crop_w, fallback_w), torch.where(found, crop_h, fallback_h)
    offsets = torch.rand(n, 2, device=device, generator=generator)
    x0 = torch.where(found, offsets[:, 0:1] * (width - crop_w), (width - crop_w) / 2)
    y0 = torch.where(found, offsets[:, 1:2] * (height - crop_h), (height - crop_h) / 2)
    return torch.cat([x0, y0, x0 + crop_w, y0 + crop_h], dim=1)


def draw_augmentation(source_sizes, generator):
    """The random part of train_transform for a batch of pictures of (width, height) `source_sizes`: crop boxes in
    picture coordinates (x0, y0, x1, y1), horizontal flips, and brightness, contrast and saturation factors."""
    n, device = len(source_sizes), source_sizes.device
    boxes = crop_boxes(source_sizes.float(), generator)
    flips = torch.rand(n, device=device, generator=generator) < 0.5
    factors = torch.empty(n, 3, device=device).uniform_(1 - JITTER, 1 + JITTER, generator=generator)
    return boxes, flips, factors


def apply_augmentation(images, source_sizes, drawn, image_size):
    """Crop, resize, flip, jitter and normalize a batch in a few kernels, as train_transform does per image.

    `images` are uint8 (N, 3, S, S): each picture resized to a square, whatever its shape; `source_sizes` (N, 2)
    holds each picture's (width, height) before that. Boxes are mapped onto the square, which undoes the stretch.
    The colour jitter is applied in a fixed order (brightness, contrast, saturation) rather than a random one.
    """
    from torchvision.ops import roi_align

    boxes, flips, factors = drawn
    n, side, device = len(images), images.shape[-1], images.device
    mean, std, grey_weights = _constants(device)
    scale = side / source_sizes.float()
    boxes = boxes * torch.cat([scale, scale], dim=1)
    # Flipping the small uint8 source and mirroring the box costs less than flipping the float crops.
    images = torch.where(flips.view(n, 1, 1, 1), images.flip(-1), images)
    mirrored = torch.stack([side - boxes[:, 2], boxes[:, 1], side - boxes[:, 0], boxes[:, 3]], dim=1)
    boxes = torch.where(flips.view(n, 1), mirrored, boxes)
    boxes = torch.cat([torch.arange(n, device=device, dtype=boxes.dtype).unsqueeze(1), boxes], dim=1)
    crops = roi_align(images.float(), boxes, output_size=image_size, spatial_scale=1.0, sampling_ratio=0,
                      aligned=True)                                    # 0..255
    brightness, contrast, saturation = (factors[:, i].view(n, 1, 1, 1) for i in range(3))
    crops.mul_(brightness).clamp_(0, 255)
    mean_grey = (crops * grey_weights).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    crops.lerp_(mean_grey, 1 - contrast).clamp_(0, 255)
    crops.lerp_((crops * grey_weights).sum(dim=1, keepdim=True), 1 - saturation).clamp_(0, 255)
    return torch.addcmul(-mean / std, crops, 1 / (255 * std))


def augment_batch(images, source_sizes, image_size, generator):
    """train_transform for a batch already in (GPU) memory: draw_augmentation, then apply_augmentation."""
    return apply_augmentation(images, source_sizes, draw_augmentation(source_sizes, generator), image_size)


def _high_bit_depth_to_8bit(image):
    # Modes I;16*, I (32-bit int) and F carry more than 8 bits; PIL's convert("L") clips them instead of
    # scaling, which turns most 16-bit photos white. Scale the actual value range to 0..255 instead.
    as_float = image.convert("F")
    low, high = as_float.getextrema()
    if high <= low:
        return Image.new("L", image.size, 0)
    scale = 255.0 / (high - low)
    return as_float.point(lambda value: (value - low) * scale).convert("L")


def to_rgb(image):
    """Return `image` upright (EXIF orientation applied) as 8-bit RGB, whatever mode it came in.

    Grey, palette, CMYK, 16-bit and alpha images are all converted; transparent areas become white, not black.
    """
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_8bit(image).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
