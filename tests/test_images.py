from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.images import load_image
from cnnkit.errors import ImageError


def _save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("RGB", ".png"),
        ("RGBA", ".png"),
        ("L", ".jpg"),
        ("P", ".gif"),
        ("I;16", ".png"),
        ("CMYK", ".jpg"),
        ("RGB", ".bmp"),
        ("RGB", ".webp"),
    ],
)
@pytest.mark.parametrize("channels", [3, 1])
def test_any_mode_and_size_becomes_the_model_input(
    tmp_path: Path, mode: str, suffix: str, channels: int
) -> None:
    img = Image.new(mode, (97, 41))
    path = _save(img, tmp_path / f"img{suffix}")
    array = load_image(path, (32, 32), channels)
    assert array.shape == (32, 32, channels) and array.dtype == np.uint8


def test_sixteen_bit_greys_are_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.full((10, 10), 32768, dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "g16.png")
    array = load_image(path, (10, 10), 1)
    assert 126 <= int(array.mean()) <= 129


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    array = load_image(_save(img, tmp_path / "t.png"), (4, 4), 3)
    assert array.min() == 255


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    path = _save(img, tmp_path / "r.jpg", exif=exif.tobytes())
    from cnnkit.data.images import to_array

    with Image.open(path) as opened:
        from PIL import ImageOps

        assert ImageOps.exif_transpose(opened).size == (20, 40)
    assert load_image(path, (40, 20), 3).shape == (40, 20, 3)
    assert to_array(Image.new("RGB", (5, 5)), (2, 3), 3).shape == (2, 3, 3)


def test_unreadable_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="not an image file"):
        load_image(text, (8, 8), 3)
    png = _save(Image.new("RGB", (64, 64), (1, 2, 3)), tmp_path / "ok.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png.read_bytes()[:60])
    with pytest.raises(ImageError, match=r"truncated\.png"):
        load_image(truncated, (8, 8), 3)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png", (8, 8), 3)
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path, (8, 8), 3)
