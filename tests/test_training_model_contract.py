"""The pieces training and serving share: the image transform, RGB conversion, the architectures, class names."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

import architectures
import preprocessing
from training.imagefolder_data import clean_class_name


def test_eval_transform_resizes_crops_and_normalizes_with_imagenet_statistics():
    grey = Image.new("RGB", (300, 200), (124, 116, 104))      # ImageNet's mean colour, 0..255
    tensor = preprocessing.eval_transform(64)(grey)
    assert tensor.shape == (3, 64, 64)
    assert tensor.abs().max() < 0.01                            # the mean maps to ~0 in every channel
    assert preprocessing.resize_size(224) == 256


def test_a_big_photo_is_the_same_model_input_in_training_and_serving(tmp_path):
    from image_decoding import decode_image
    from training.imagefolder_data import ImageSamples

    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    photo = Image.fromarray(smooth).resize((1600, 1200), Image.BICUBIC)
    path = tmp_path / "big.jpg"
    photo.save(path, quality=90)
    data = path.read_bytes()

    served = preprocessing.eval_transform(64)(decode_image(data, preprocessing.decode_side(64)))
    trained_on, _, _ = ImageSamples([(path, 0)], preprocessing.eval_transform(64),
                                    min_side=preprocessing.decode_side(64))[0]
    assert torch.equal(served, trained_on)
    # both decoded it at reduced scale, and that is a (slightly) different input from a full decode
    full = preprocessing.eval_transform(64)(Image.open(io.BytesIO(data)).convert("RGB"))
    assert not torch.equal(full, served)


def test_to_rgb_applies_the_exif_orientation():
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6                                              # rotate 90° clockwise to display
    buffer = io.BytesIO()
    wide.save(buffer, "JPEG", exif=exif)
    upright = preprocessing.to_rgb(Image.open(io.BytesIO(buffer.getvalue())))
    assert upright.size == (20, 40) and upright.mode == "RGB"


def test_to_rgb_puts_transparent_areas_on_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert preprocessing.to_rgb(image).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert preprocessing.to_rgb(palette).getpixel((1, 1)) == (255, 255, 255)


def test_to_rgb_scales_16_bit_images_instead_of_clipping_them_white():
    ramp = np.linspace(0, 65535, 64 * 8, dtype=np.uint16).reshape(8, 64)
    rgb = preprocessing.to_rgb(Image.fromarray(ramp))
    values = np.asarray(rgb)[..., 0]
    assert rgb.mode == "RGB" and values.min() == 0 and values.max() == 255
    assert 100 < values.mean() < 155


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "LA", "1", "I", "F"])
def test_to_rgb_converts_every_mode(mode):
    image = Image.new("RGB", (10, 6), (200, 100, 50)).convert(mode)
    converted = preprocessing.to_rgb(image)
    assert converted.mode == "RGB" and converted.size == (10, 6)


@pytest.mark.parametrize("arch", architectures.ARCHITECTURES)
def test_every_architecture_has_a_backbone_and_a_head_for_the_class_count(arch):
    model = architectures.build_model(arch, 7).eval()
    features = model.backbone(torch.zeros(1, 3, 64, 64))
    assert features.shape == (1, architectures.feature_size(arch))
    assert model.head(features).shape == (1, 7)


def test_build_model_refuses_unknown_choices():
    with pytest.raises(ValueError, match="unknown arch 'vgg'"):
        architectures.build_model("vgg", 3)
    with pytest.raises(ValueError, match="unknown weights"):
        architectures.build_model("resnet18", 3, weights="places365")
    with pytest.raises(ValueError, match="at least 2 classes"):
        architectures.build_model("resnet18", 1)


@pytest.mark.parametrize("folder, name", [
    ("001.Affenpinscher", "Affenpinscher"),
    ("003.Airedale_terrier", "Airedale terrier"),
    ("133.Yorkshire_terrier", "Yorkshire terrier"),
    ("n01440764", "n01440764"),
    ("cat", "cat"),
])
def test_class_folder_names_are_cleaned_for_display(folder, name):
    assert clean_class_name(folder) == name
