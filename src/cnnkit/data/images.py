"""Decoding image files the same way everywhere: any format, size or mode -> uint8 (H, W, C).

Memory is bounded by the work, not by what a file claims (a 100 KB PNG can claim 12,000 x
12,000 pixels of 16 bits):

- **One pixel limit** for predict, serve and training folders: an image whose decoded size is
  over ``max_pixels()`` (``$CNNKIT_MAX_PIXELS``, default MAX_PIXELS) is refused before it is
  decoded. JPEGs are first reduced while decoding (``draft``: 1/2, 1/4 or 1/8 scale, to no less
  than twice the target size), so a large photo is judged by what is really decoded.
- **Reduced at once**: a decoded image more than twice the target size is box-reduced by a whole
  factor before any mode conversion or rotation, so every later step works on a small image.
- **A bounded number of large decodes in flight**: every decode of more than SMALL_PIXELS pixels
  holds its pixel count from one budget shared by all threads of the process (IN_FLIGHT limits),
  so four predict threads or eight server requests cannot each hold a full-size image at once.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import ImageError

MAX_PIXELS = 40_000_000  # width x height decoded; ~6,300 x 6,300 (raise: $CNNKIT_MAX_PIXELS)
MAX_PIXELS_ENV = "CNNKIT_MAX_PIXELS"
SMALL_PIXELS = 1_000_000  # decodes this small never wait for the budget (a 1,000 x 1,000 photo)
REDUCING_GAP = 2  # reduce no further than twice the target size; bilinear resizing does the rest
# Pillow's transposition for each EXIF orientation (what ImageOps.exif_transpose applies).
_ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
                6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}  # fmt: skip


def max_pixels() -> int:
    """The pixel limit of every decode: ``$CNNKIT_MAX_PIXELS`` where set, else MAX_PIXELS."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise ImageError(f"{MAX_PIXELS_ENV}={text} must be a positive number of pixels")
    return value


class PixelBudget:
    """A weighted semaphore over pixels: large decodes wait until the pixels they need are free."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._changed = threading.Condition()

    def acquire(self, pixels: int) -> int:
        """Wait for ``pixels`` (none for a small image); returns what to :meth:`release`."""
        if pixels <= SMALL_PIXELS:
            return 0
        pixels = min(pixels, self.total)  # one image over the budget still runs, alone
        with self._changed:
            self._changed.wait_for(lambda: self.free >= pixels)
            self.free -= pixels
        return pixels

    def release(self, pixels: int) -> None:
        if pixels:
            with self._changed:
                self.free += pixels
                self._changed.notify_all()


# One image at the pixel limit at a time (or several smaller ones): each costs at most ~8 bytes a
# pixel while it is decoded and reduced (the decoded image, and one converted copy before
# reduction), so large decodes of the whole process stay near ~320 MB whatever the number of
# threads or requests. Images of up to SMALL_PIXELS, the usual ones, never wait.
IN_FLIGHT = PixelBudget(MAX_PIXELS)


def load_image(
    path: str | Path, size: tuple[int, int], channels: int, limit: int | None = None
) -> np.ndarray:
    """Read ``path``, apply its EXIF rotation, convert to RGB (or grey) and resize to ``size``.

    ``size`` is (height, width). Unreadable or non-image files, and images over ``limit`` pixels
    (default :func:`max_pixels`), raise ImageError naming the file.
    """
    try:
        with open(path, "rb") as f:
            return _decode(f, size, channels, limit or max_pixels(), str(path))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None


def decode_bytes(
    data: bytes | Any, size: tuple[int, int], channels: int, max_pixels: int, name: str = "image"
) -> np.ndarray:
    """Bytes (or a binary file object) received from someone else, such as a server's upload:
    like :func:`load_image`, with an image of more than ``max_pixels`` pixels refused."""
    import io

    if isinstance(data, bytes | bytearray | memoryview):
        if not len(data):
            raise ImageError(f"{name}: empty upload")
        data = io.BytesIO(data)
    return _decode(data, size, channels, max_pixels, name)


class PixelLimitError(ImageError):
    """An image with more pixels than the limit allows (the server answers 413)."""


def _decode(stream: Any, size: tuple[int, int], channels: int, limit: int, name: str) -> np.ndarray:
    """Decode under the pixel limit and budget. Any failure inside a decoder (hostile input can
    raise anything there) is an ImageError naming the file."""
    from PIL import Image, UnidentifiedImageError

    _quiet_pillow()
    held = 0
    try:
        with Image.open(stream) as opened:
            orientation, pixels = _drafted(opened, size, limit, name)
            held = IN_FLIGHT.acquire(pixels)
            return to_array(_reduced(opened, size, orientation), size, channels)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file PIL can read") from None
    except Image.DecompressionBombError as exc:  # over Pillow's own limit: over ours too
        found = re.search(r"\((\d+) pixels\)", str(exc))
        claimed = f"{int(found.group(1)):,}" if found else "more"
        raise PixelLimitError(
            f"{name}: {claimed} pixels is more than the {limit:,} pixels allowed ({_RAISE_HINT})"
        ) from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this image") from None
    except Exception as exc:  # truncated or corrupt data, or a decoder's own refusal
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ImageError(f"{name}: cannot decode image ({reason})") from None
    finally:
        if held:  # the full-size image is gone: its pixels are free, and its memory returned
            IN_FLIGHT.release(held)
            release_memory()


_RAISE_HINT = f"make it smaller, or raise the limit with {MAX_PIXELS_ENV}"


def _quiet_pillow() -> None:
    """Pillow warns of images over half its own limit; cnnkit's limit (lower) is what decides.
    The filter is added only where it is missing (adding one invalidates every thread's cache)."""
    from PIL import Image

    bomb = Image.DecompressionBombWarning
    if not any(f[0] == "ignore" and f[2] is bomb for f in warnings.filters):
        warnings.filterwarnings("ignore", category=bomb)


def _target(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(height, width) to reduce the stored image towards: one displayed on its side (EXIF
    orientations 5-8) is stored transposed."""
    height, width = size
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _drafted(opened: Any, size: tuple[int, int], limit: int, name: str) -> tuple[int, int]:
    """Set a JPEG to decode at 1/2, 1/4 or 1/8 scale where that is large enough, and refuse an
    image over ``limit`` pixels before it is decoded. Returns the EXIF orientation known so far
    (a PNG's may follow its pixels: read after decoding) and the pixels to be decoded."""
    orientation = 1
    if opened.format == "JPEG":
        orientation = _orientation(opened)  # in the header
        height, width = _target(size, orientation)
        opened.draft(opened.mode, (width * REDUCING_GAP, height * REDUCING_GAP))
    w, h = opened.size
    if w * h > limit:
        raise PixelLimitError(
            f"{name}: {w}x{h} is more than the {limit:,} pixels allowed ({_RAISE_HINT})"
        )
    return orientation, w * h


def _reduced(opened: Any, size: tuple[int, int], orientation: int) -> Any:
    """The opened image decoded, box-reduced while it stays at least REDUCING_GAP times
    ``size``, with its EXIF rotation applied."""
    from PIL import Image

    opened.load()
    if opened.format != "JPEG":
        orientation = _orientation(opened)
    height, width = _target(size, orientation)
    image = _reduced_towards(_reducible(opened), height, width)
    if orientation in _ORIENTATION:
        image = image.transpose(getattr(Image.Transpose, _ORIENTATION[orientation]))
    return image


def _orientation(opened: Any) -> int:
    try:
        return int(opened.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block: shown as stored
        return 1


def _reduced_towards(image: Any, height: int, width: int) -> Any:
    """``image`` box-reduced by the largest whole factor that keeps it at least REDUCING_GAP
    times ``height`` x ``width`` (unchanged where that factor is below 2)."""
    factor = min(image.width // (width * REDUCING_GAP), image.height // (height * REDUCING_GAP))
    return image.reduce(factor) if factor >= 2 else image


def _reducible(image: Any) -> Any:
    """The image in a mode Pillow's ``reduce`` takes (8-bit or 32-bit bands), converted at its
    full size with no more than one copy."""
    from PIL import Image

    if image.mode.startswith("I;16"):
        # 16-bit greys to 8 bits by scale (not clip at 255), a block of rows at a time.
        values = np.asarray(image)
        out = np.empty(values.shape, np.uint8)
        for top in range(0, len(values), 256):
            out[top : top + 256] = values[top : top + 256].astype(np.uint32) * 255 // 65535
        return Image.fromarray(out, "L")
    if image.mode == "1":
        return image.convert("L")
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "PA":
        return image.convert("RGBA")
    return image


def to_array(image: object, size: tuple[int, int], channels: int) -> np.ndarray:
    """A PIL image as uint8 ``(height, width, channels)``."""
    from PIL import Image

    assert isinstance(image, Image.Image)
    height, width = size
    # As a decoded file is (load_image), so that arrays and files agree.
    image = _reduced_towards(_reducible(image), height, width)
    if image.mode == "I":
        # 32-bit integer greys: scale to 8 bits rather than clip at 255.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels onto white, as a viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("RGB" if channels == 3 else "L")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array if array.ndim == 3 else array[..., np.newaxis]


def release_memory() -> None:
    """Hand memory freed by a large decode back to the system (glibc keeps freed blocks in
    per-thread arenas, so that each decoding thread would otherwise keep its largest image)."""
    global _TRIM
    if _TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None


def claimed_pixels(data: bytes | Any) -> int:
    """The pixel count an image's header claims (0 where it is not an image Pillow knows);
    reads the header only. ``data``: bytes, or a binary file (left at its start)."""
    import io

    from PIL import Image

    stream = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
    try:
        with Image.open(stream) as opened:
            return int(opened.width * opened.height)
    except Exception:
        return 0
    finally:
        stream.seek(0)


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
