"""The one definition of how an image becomes a model input, shared by training and serving.

inference.py imports this module from the model's code/ folder and training imports it from inference/, so the
transform a model was trained with is the transform it is served with: they cannot drift apart.
"""

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


def eval_transform(image_size=DEFAULT_IMAGE_SIZE):
    """Resize, center crop, tensor, ImageNet normalization: what every validation, test and served image gets."""
    return transforms.Compose([
        transforms.Resize(resize_size(image_size)),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def train_transform(image_size=DEFAULT_IMAGE_SIZE):
    """Augmented variant for fine-tuning; it ends in the same tensor conversion and normalization as eval."""
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(0.5, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


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
