"""Bytes -> upright 8-bit RGB PIL image, with the limits an endpoint open to the internet needs.

Only common photo formats are opened. The pixel count is checked from the header before any pixel is decoded, so
a decompression bomb costs nothing; JPEGs are decoded at reduced scale (draft mode) when they are much larger than
what the eval transform resizes to, which makes a 12-megapixel photo cost little more than a small one.
Colour handling (EXIF rotation, grey/palette/alpha/CMYK/16-bit to RGB) is preprocessing.to_rgb, shared with
training.
"""

import io
import warnings

from PIL import Image, UnidentifiedImageError

from inference_errors import BadRequestError, PayloadTooLargeError, UnprocessableImageError
from preprocessing import reduce_on_load, to_rgb

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")   # JPEG includes MPO (multi-picture phone photos)
MAX_PIXELS = 50_000_000       # a 48-MP phone photo still passes; bombs declare far more
MAX_ASPECT_RATIO = 20         # the short-side resize would turn a 1 x 10^6 strip into a huge image

Image.init()   # registers every plugin (WebP, TIFF); Image.open(formats=...) sees only the preloaded ones otherwise


def decode_image(data, min_side):
    """Decode `data` and return an RGB image whose short side is still at least `min_side` (when it was before).

    Raises BadRequestError (empty), PayloadTooLargeError (too many pixels) or UnprocessableImageError (not an
    image in FORMATS, truncated, corrupt, degenerate shape).
    """
    if not data:
        raise BadRequestError("the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise PayloadTooLargeError(f"image has too many pixels ({error})") from error
    except UnidentifiedImageError as error:
        raise UnprocessableImageError(f"not an image in a supported format ({', '.join(FORMATS)})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise UnprocessableImageError(f"unreadable image header: {error}") from error

    width, height = image.size
    if width * height > MAX_PIXELS:
        raise PayloadTooLargeError(f"image is {width}x{height} pixels, the limit is {MAX_PIXELS // 1_000_000} MP")
    if min(width, height) < 1 or max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise UnprocessableImageError(f"image shape {width}x{height} is not a photo (aspect ratio over "
                                      f"{MAX_ASPECT_RATIO}:1)")
    reduce_on_load(image, min_side)
    try:
        image.load()
        return to_rgb(image)
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Truncated files, corrupt data and Pillow's decompressed-size limits all land here.
        raise UnprocessableImageError(f"the image data is truncated or corrupt ({error})") from error
