"""Load on `cnnkit serve`: N concurrent clients on loopback for T seconds.

    python benchmarks/serve_load.py RUN [--clients 32] [--seconds 60] [--engine keras] [--tta N]
                                    [--json FILE]
    python benchmarks/serve_load.py RUN --smoke [--json FILE]

Starts the server as its own process on a free port, waits for /health, sends one request per
client to warm it, measures its resident memory, then runs ``--clients`` threads, each posting
single 32x32 PNG images (real test images of the run's data where it is on this machine,
else random ones) over a keep-alive connection, back to back, for ``--seconds``. Prints requests/s,
latency percentiles (p50/p95/p99/max), errors (any status but 200, or a failed connection), the
server's memory before and after and its growth, and the model calls the server made (how much
batching happened). Writes the same as JSON with ``--json FILE``.

``--smoke``: the same code with 2 clients for 1 s after a 0.5 s warm-up, in seconds, to check that
the benchmark still works on any run (e.g. one of ``cnnkit train --preset smoke data.name=digits
train.epochs=1``); the JSON goes to a temporary folder unless ``--json`` says where. It exits
non-zero when a request failed or none was answered.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

# --smoke: a short load (a check that everything runs, not a measurement).
SMOKE = {"clients": 2, "seconds": 1.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def images(run: Path, count: int = 64) -> list[bytes]:
    from cnnkit.config import Config
    from cnnkit.data import load_dataset
    from cnnkit.errors import CnnkitError
    from cnnkit.runs import Run

    try:
        config: Config = Run(run).config()
        test = load_dataset(config.data, config.seed).test
        pixels = np.asarray(test.x[:count])
    except CnnkitError:
        pixels = np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    out = []
    for p in pixels:
        buffer = io.BytesIO()
        Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def client(
    port: int,
    bodies: list[bytes],
    stop: float,
    latencies: list[float],
    errors: list[str],
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.perf_counter() < stop:
        body = bodies[int(rng.integers(len(bodies)))]
        start = time.perf_counter()
        try:
            connection.request("POST", "/predict", body=body, headers={"Content-Type": "image/png"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors.append(f"status {response.status}")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(type(exc).__name__)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append(time.perf_counter() - start)
    connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--engine", default="keras")
    parser.add_argument("--tta", type=int, choices=(0, 1, 2))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true", help="a short load: does it run?")
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
        args.json = args.json or Path(tempfile.mkdtemp(prefix="cnnkit-smoke-")) / "serve_load.json"

    port = free_port()
    command = [sys.executable, "-m", "cnnkit", "serve", str(args.run), "--port", str(port),
               "--engine", args.engine, *(["--tta", str(args.tta)] if args.tta is not None else [])]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    reason = server.stderr.read() if server.stderr else ""
                    raise SystemExit(f"the server did not start: {reason}") from None
                time.sleep(0.5)
        bodies = images(args.run)
        warm: list[float] = []
        warm_up = 0.5 if args.smoke else 2.0  # traces, allocator warm-up
        client(port, bodies, time.perf_counter() + warm_up, warm, [], 99)
        process = psutil.Process(server.pid)
        before = process.memory_info().rss
        latencies: list[float] = []
        errors: list[str] = []
        stop = time.perf_counter() + args.seconds
        threads = [threading.Thread(target=client, args=(port, bodies, stop, latencies, errors, i))
                   for i in range(args.clients)]  # fmt: skip
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        after = process.memory_info().rss
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read())
    finally:
        server.terminate()
        server.wait(timeout=30)
    ms = sorted(1000 * v for v in latencies)

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, int(q * len(ms)))] if ms else float("nan")

    record = {
        "run": str(args.run), "engine": args.engine, "tta": args.tta, "clients": args.clients,
        "seconds": round(elapsed, 1), "requests": len(latencies), "errors": len(errors),
        "error_kinds": sorted(set(errors)), "requests_per_second": round(len(latencies) / elapsed, 1),
        "latency_ms": {"p50": round(pct(0.50), 1), "p95": round(pct(0.95), 1), "p99": round(pct(0.99), 1),
                       "max": round(ms[-1], 1) if ms else None, "mean": round(statistics.fmean(ms), 1) if ms else None},
        "server_rss_mb": {"before": round(before / 2**20, 1), "after": round(after / 2**20, 1),
                          "growth": round((after - before) / before, 4)},
        "model_calls": health["model_calls"], "images": health["images"],
    }  # fmt: skip
    lat = record["latency_ms"]
    rss = record["server_rss_mb"]
    print(f"{args.clients} clients, {elapsed:.0f} s, engine {args.engine}: {record['requests']} requests "
          f"({record['requests_per_second']:.0f}/s), {record['errors']} errors")  # fmt: skip
    print(f"latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
    print(f"server memory: {rss['before']} MB -> {rss['after']} MB ({rss['growth']:+.1%})")
    print(f"model calls {health['model_calls']} for {health['images']} images "
          f"({health['images'] / max(1, health['model_calls']):.1f} per call)")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if args.smoke and (errors or not latencies) else 0


if __name__ == "__main__":
    sys.exit(main())
