"""Hostile files for the hostile-input tests, written small: large images row by row (a few KB
on disk and in the writing process, however many pixels they claim), archives that inflate."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np


def big_png(
    path: Path, width: int, height: int, mode: str = "I;16", rows: int | None = None
) -> Path:
    """A PNG of ``width`` x ``height`` (16-bit grey "I;16", 8-bit "RGB" or "RGBA"), a pattern
    written row by row: it compresses to a few hundred KB whatever it claims. ``rows``: write
    only this many rows (a file refused by its header need not hold its pixels)."""
    depth, kind, bands = {"I;16": (16, 0, 1), "RGB": (8, 2, 3), "RGBA": (8, 6, 4)}[mode]
    row_bytes = width * bands * depth // 8

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    packer = zlib.compressobj(1)
    with path.open("wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, kind, 0, 0, 0)))
        pattern = (np.arange(row_bytes, dtype=np.uint32) * 7 % 251).astype(np.uint8).tobytes()
        pending = []
        for y in range(height if rows is None else rows):
            pending.append(packer.compress(b"\x00" + pattern))
            if y % 512 == 511:
                f.write(chunk(b"IDAT", b"".join(pending)))
                pending = []
        pending.append(packer.flush())
        f.write(chunk(b"IDAT", b"".join(pending)))
        f.write(chunk(b"IEND", b""))
    return path


PEAK_SCRIPT = """
import json, sys, gc
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
def mark():
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:  # the peak (VmHWM) starts again from now
        f.write("5")
    return rss("VmRSS")
"""


def peaks(setup: str, cases: dict[str, str], src: Path) -> dict[str, tuple[int, str]]:
    """Run ``setup`` in a fresh Python (with ``src`` first on its path), then each case in turn;
    for each, how far resident memory rose above what it was before the case (bytes), and the
    last line the case printed (``print(...)`` in the case's code)."""
    lines = [PEAK_SCRIPT, f"sys.path.insert(0, {str(src)!r})", setup, "results = {}"]
    for name, code in cases.items():
        lines += [
            "base = mark()",
            "out = ''",
            code,
            f"results[{name!r}] = (rss('VmHWM') - base, str(out))",
        ]
    lines.append("print(json.dumps(results))")
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(src)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return {
        k: (int(v[0]), v[1]) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()
    }
