"""Helpers of the serving tests: a tiny real model directory and generated images. The loopback image server, the
tests' stand-in for the internet (the only fake the serving tests use besides AWS service errors), is
bench/loopback_servers.py's ImageServer, which the benchmarks run too.
"""

import io
import struct
import zlib

from PIL import Image

CLASS_NAMES = ("Beagle", "Pug", "Poodle")
IMAGE_SIZE = 64


def make_model_dir(path, class_names=CLASS_NAMES, image_size=IMAGE_SIZE, arch="resnet18"):
    """A model directory written by training's own writer, with an untrained ResNet-18 (serving needs no accuracy)."""
    from architectures import build_model
    from training.model_archive import write_model_dir

    import torch

    torch.manual_seed(0)
    model = build_model(arch, len(class_names), weights="none")
    return write_model_dir(path, model, arch=arch, class_names=list(class_names), image_size=image_size,
                           weights="none", mode="finetune")


def image_bytes(size=(160, 120), mode="RGB", fmt="JPEG", color=None, **save_args):
    color = color if color is not None else {"RGB": (180, 90, 40), "L": 120, "CMYK": (0, 80, 160, 20),
                                             "RGBA": (10, 200, 30, 128), "P": 3, "I;16": 40000}.get(mode, 0)
    image = Image.new(mode, size, color)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width, height):
    """A PNG that declares width x height 8-bit grey pixels and carries none of them."""
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + png_chunk(b"IEND", b""))


def decompression_bomb(side=12000):
    """A real side x side grey PNG of zeros: 144 megapixels in about 140 kB."""
    compressor = zlib.compressobj(9)
    row = bytes(side + 1)   # filter byte + pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b""))
