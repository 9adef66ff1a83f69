"""Hostile input, class 1: memory is bounded by the work, never by what a file claims.

Peak resident memory is measured in child processes (``/proc/self/status``'s VmHWM, reset before
each case), against the process's own memory just before the case: predict of any single file
stays within 1 GiB of the model's baseline, a server under 8 concurrent worst-case requests
within 1.5 GiB of its own and back near it afterwards. Large images are written row by row
(``hostile.big_png``), so the tests themselves stay light.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from PIL import Image

from cnnkit.data import cifar, idx
from cnnkit.data.images import load_image
from cnnkit.errors import DataError, ImageError
from conftest import REPO, cli, start_server
from hostile import big_png, peaks

GiB = 1 << 30
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Near the pixel limit (6,300 x 6,300 = 39.7 M), in the costliest modes; over it; and a JPEG
    over it that decodes at 1/8 scale."""
    folder = tmp_path_factory.mktemp("bombs")
    files = {
        "grey16": big_png(folder / "grey16.png", 6300, 6300, "I;16"),
        "rgba": big_png(folder / "rgba.png", 6300, 6300, "RGBA"),
        "over": big_png(folder / "over.png", 12000, 12000, "I;16", rows=4),
    }
    Image.new("L", (8000, 6000), 128).save(folder / "photo.jpg", quality=50)  # 48 M pixels
    files["photo"] = folder / "photo.jpg"
    assert all(f.stat().st_size < 2_000_000 for f in files.values())  # light, whatever they claim
    return files


def test_predict_and_folders_decode_any_file_within_a_gib(
    digits_run: Path, bombs: dict[str, Path], tmp_path: Path
) -> None:
    # The same images as a training folder (two classes of two).
    for i, name in enumerate(("grey16", "rgba", "grey16", "rgba")):
        (tmp_path / f"class{i % 2}").mkdir(exist_ok=True)
        shutil.copy(bombs[name], tmp_path / f"class{i % 2}" / f"{i}.png")
    setup = (
        "from cnnkit.predictor import Predictor\n"
        f"predictor = Predictor({str(digits_run)!r})\n"
        f"predictor.predict([{str(bombs['photo'])!r}])  # the model traced, the decoders loaded\n"
    )
    four = [str(bombs[n]) for n in ("grey16", "rgba", "grey16", "rgba")]
    one = "answers, errors = predictor.predict([{!r}]); out = errors[0] if errors else answers[0]"
    cases = {name: one.format(str(bombs[name])) for name in ("grey16", "rgba", "over", "photo")}
    cases["four"] = f"answers, errors = predictor.predict({four!r}); out = len(answers)"
    cases["folder"] = (
        "from cnnkit.config import DataConfig\nfrom cnnkit.data.folder import load\n"
        f"out = len(load(DataConfig(name='folder', path={str(tmp_path)!r}, image_size=32,"
        " test_split=0.5)).train)"
    )
    measured = peaks(setup, cases, REPO / "src")
    report = {k: f"{v[0] / 2**20:.0f} MiB" for k, v in measured.items()}
    for name, (rise, _) in measured.items():
        assert rise <= GiB, (name, report)
    assert "pixels allowed" in measured["over"][1] and measured["over"][0] < 64 << 20, report
    assert measured["four"][1] == "4" and measured["folder"][1] == "2"
    assert measured["photo"][1].startswith("Prediction(")  # 48 M pixels, decoded at 1/8 scale


def test_the_pixel_limit_is_one_setting(
    bombs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ImageError, match=r"12000x12000 is more than the 40,000,000 pixels allowed"):
        load_image(bombs["over"], (8, 8), 1)
    monkeypatch.setenv("CNNKIT_MAX_PIXELS", "1000000")
    with pytest.raises(ImageError, match="CNNKIT_MAX_PIXELS"):
        load_image(bombs["rgba"], (8, 8), 3)
    # The JPEG's limit applies to what is decoded: 1,000 x 750 at 1/8 scale.
    assert load_image(bombs["photo"], (8, 8), 1).shape == (8, 8, 1)


def test_serve_under_concurrent_bombs_stays_within_its_bound(
    digits_run: Path, bombs: dict[str, Path]
) -> None:
    import psutil  # in the dev extra

    port, server = start_server(digits_run)
    url = f"http://127.0.0.1:{port}"
    try:
        process = psutil.Process(server.pid)
        baseline = process.memory_info().rss
        peak, done = baseline, threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.005)

        boundary = uuid.uuid4().hex
        body = (
            b"".join(
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{n}.png"\r\n'
                f"Content-Type: image/png\r\n\r\n".encode()
                + bombs[n].read_bytes()
                + b"\r\n"
                for n in ("grey16", "rgba")
            )
            + f"--{boundary}--\r\n".encode()
        )
        statuses: list[int] = []

        def post() -> None:
            request = urllib.request.Request(
                f"{url}/predict", data=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=300) as answer:
                statuses.append(answer.status)

        watcher = threading.Thread(target=watch)
        watcher.start()
        clients = [threading.Thread(target=post) for _ in range(8)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        time.sleep(1)
        after = process.memory_info().rss
        done.set()
        watcher.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    figures = f"baseline {baseline >> 20} MiB, peak {peak >> 20} MiB, after {after >> 20} MiB"
    assert statuses == [200] * 8, figures
    assert peak - baseline <= 1.5 * GiB, figures
    assert after - baseline <= 256 << 20, figures  # what the requests took is given back


def test_archive_members_are_bounded_by_the_format(tmp_path: Path) -> None:
    # A member that claims 4.5 GiB: refused from its header, before a byte of it is read.
    member = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    member.size = 4_500_000_000
    archive = tmp_path / "cifar-10-python.tar.gz"
    with gzip.open(archive, "wb") as f:
        f.write(member.tobuf(format=tarfile.GNU_FORMAT) + bytes(1 << 20))
    with pytest.raises(DataError, match="more than a batch of this dataset can be"):
        cifar.load(str(archive), False)
    # The same for an extracted copy's file (sparse: no disk used).
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with (folder / "data_batch_1").open("wb") as f:
        f.truncate(4_500_000_000)
    with pytest.raises(DataError, match="more than a batch"):
        list(cifar.read_members(folder, {"data_batch_1"}))


def test_idx_files_are_read_only_as_far_as_their_header_allows(tmp_path: Path) -> None:
    claims = tmp_path / "claims.gz"
    with gzip.open(claims, "wb") as f:  # 1,000,000 images of 1,000 x 1,000: refused unread
        f.write(
            bytes([0, 0, 8, 3]) + (1_000_000).to_bytes(4, "big") + (1000).to_bytes(4, "big") * 2
        )
    with pytest.raises(DataError, match="more than these datasets hold"):
        idx.read_idx(claims)
    inflates = tmp_path / "inflates.gz"  # 10 images, then 200 MB of zeros (200 KB on disk)
    with gzip.open(inflates, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
        for _ in range(200):
            f.write(bytes(1 << 20))
    assert inflates.stat().st_size < 1_000_000
    with pytest.raises(DataError, match="header says 7840; the file is damaged"):
        idx.read_idx(inflates)


def test_a_run_that_cannot_fit_in_memory_is_refused_before_its_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    base = ("train", "--preset", "smoke", "--runs-dir", str(runs), "data.name=digits")
    # The network's activations: seed_cnn at 128 x 128, batch 64, needs ~3.5 GB.
    too_big = cli(*base, "data.image_size=128", env={"CNNKIT_MEMORY_LIMIT_MB": "2500"})
    assert too_big.returncode == 2, too_big.stderr
    line = too_big.stderr.strip().splitlines()[-1]
    assert "GB of memory" in line and "would fit" in line and "2.5 GB is available" in line
    # The decoded images themselves: 1,797 digits at 1,024 x 1,024 are 1.9 GB.
    no_room = cli(*base, "data.image_size=1024", env={"CNNKIT_MEMORY_LIMIT_MB": "2000"})
    assert no_room.returncode == 2 and "data.image_size=" in no_room.stderr, no_room.stderr
    assert not runs.exists() or not list(runs.iterdir())
