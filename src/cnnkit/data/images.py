"""Decoding image files the same way everywhere: any format, size or mode -> uint8 (H, W, C)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnkit.errors import ImageError


def load_image(path: str | Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """Read ``path``, apply its EXIF rotation, convert to RGB (or grey) and resize to ``size``.

    ``size`` is (height, width). Unreadable or non-image files raise ImageError naming the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file PIL can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: too many pixels to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise ImageError(f"{path}: cannot decode image ({exc})") from None
    return to_array(image, size, channels)


def decode_bytes(
    data: bytes, size: tuple[int, int], channels: int, max_pixels: int, name: str = "image"
) -> np.ndarray:
    """Bytes received from someone else (a server's upload): like :func:`load_image`, but any
    failure to decode is an ImageError (hostile input can raise anything inside a decoder), and
    an image of more than ``max_pixels`` pixels is refused before it is decoded."""
    import io

    from PIL import Image, ImageOps

    if not data:
        raise ImageError(f"{name}: empty upload")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{name}: {width}x{height} is more than the {max_pixels:,} pixels allowed"
                )
            opened.load()
            image = ImageOps.exif_transpose(opened)
            return to_array(image, size, channels)
    except ImageError:
        raise
    except Exception as exc:
        kind = type(exc).__name__
        raise ImageError(f"{name}: not an image that can be decoded ({kind})") from None


def to_array(image: object, size: tuple[int, int], channels: int) -> np.ndarray:
    """A PIL image as uint8 ``(height, width, channels)``."""
    from PIL import Image

    assert isinstance(image, Image.Image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit and 32-bit integer greys: scale to 8 bits rather than clip at 255.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels onto white, as a viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("RGB" if channels == 3 else "L")
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array if array.ndim == 3 else array[..., np.newaxis]


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images ``(N, H, W, C)`` resized to ``size`` x ``size`` exactly as files are."""
    from PIL import Image

    n, height, width, channels = images.shape
    if (height, width) == (size, size):
        return images
    out = np.empty((n, size, size, channels), np.uint8)
    mode = "RGB" if channels == 3 else "L"
    for i, image in enumerate(images):
        pil = Image.fromarray(image if channels == 3 else image[..., 0], mode)
        out[i] = to_array(pil, (size, size), channels)
    return out
