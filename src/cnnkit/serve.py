"""The HTTP service: a run's model behind FastAPI, with a page to try it in a browser.

    GET  /          a page: drop or pick an image, see the top classes as bars (and the heatmap)
    POST /predict   one or more images (multipart field "file", or the raw bytes as the body)
    GET  /health    {"status": "ok"}
    GET  /model     classes, input size, run metadata
    GET  /openapi.json, /docs

Images from concurrent requests are gathered into one model call (``Batcher``): under load that
is many times the throughput of one call per request. Every bad request (not an image, truncated,
too large, too many pixels, wrong field, too many files) is a 4xx JSON error ``{"error": ...}``;
the service keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request  # FastAPI reads the handlers' annotations by name
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from cnnkit.data.images import decode_bytes
from cnnkit.errors import ImageError
from cnnkit.metrics import predict_probabilities
from cnnkit.predict import Predictor


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 10_000_000  # per uploaded image
    max_pixels: int = 40_000_000  # width x height, checked before decoding (decompression bombs)
    max_images: int = 16  # per request
    timeout: float = 10.0  # seconds for a request's images to be answered
    max_batch: int = 64  # images per model call
    wait: float = 0.002  # seconds the batcher waits for more images after the first


class _OnBatch:
    """Keras's predict_on_batch behind the ``predict`` interface TTA uses: a small batch costs
    ~3 ms this way against ~45 ms through ``predict`` (measured on the fast model, one image)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, x: np.ndarray, batch_size: int = 0, verbose: int = 0) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(x))


class Batcher:
    """Gathers the images of concurrent requests into one call of the model, in one thread."""

    def __init__(self, predictor: Predictor, tta: int, limits: Limits) -> None:
        self.model = _OnBatch(predictor.model) if predictor.engine == "keras" else predictor.model
        self.tta, self.limits = tta, limits
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self.calls = 0
        self.images = 0

    def _predict(self, images: np.ndarray) -> np.ndarray:
        # Padded to a power of two, so that the graph is traced for a few sizes only.
        n = len(images)
        size = 1 << (n - 1).bit_length()
        padded = np.concatenate([images, np.zeros((size - n, *images.shape[1:]), images.dtype)])
        return predict_probabilities(self.model, padded.astype(np.float32), size, self.tta)[:n]

    def warm_up(self, shape: tuple[int, ...]) -> None:
        size = 1
        while size <= self.limits.max_batch:
            self._predict(np.zeros((size, *shape), np.uint8))
            size *= 2

    async def submit(self, images: np.ndarray) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self.queue.put((images, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            waiting = [first]
            count = len(first[0])
            deadline = loop.time() + self.limits.wait
            while count < self.limits.max_batch:
                try:
                    item = await asyncio.wait_for(
                        self.queue.get(), max(0.0, deadline - loop.time())
                    )
                except TimeoutError:
                    break
                waiting.append(item)
                count += len(item[0])
            live = [(x, f) for x, f in waiting if not f.done()]  # a timed-out request is gone
            if not live:
                continue
            batch = np.concatenate([x for x, _ in live])
            try:
                probabilities = await asyncio.to_thread(self._predict, batch)
            except Exception as exc:
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.calls += 1
            self.images += len(batch)
            start = 0
            for x, future in live:
                if not future.done():
                    future.set_result(probabilities[start : start + len(x)])
                start += len(x)


def create_app(predictor: Predictor, limits: Limits | None = None, tta: int = 0) -> Any:
    """The FastAPI application serving ``predictor``'s model.

    ``tta``: test-time augmentation, 0 by default whatever the run's: a service answers one
    image in one pass (the fast recipe's level 2 is six passes, ~6x the latency under load);
    ``cnnkit predict`` uses the run's level. /model says which."""
    limits = limits or Limits()
    batcher = Batcher(predictor, tta, limits)
    run = predictor.run
    meta = run.meta()
    shape = (*predictor.image_size, predictor.channels)
    classes = predictor.class_names

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        batcher.warm_up(shape)
        # The model's objects live as long as the server: out of the collector's way, so that
        # its passes stay short under load (they scan only what requests allocate).
        gc.collect()
        gc.freeze()
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(
        title="cnnkit",
        version="1",
        summary=f"{meta.get('model')} trained on {(meta.get('dataset') or {}).get('name')}",
        description="Image classification with a cnnkit run's model.",
        lifespan=lifespan,
    )

    class BadRequest(Exception):
        def __init__(self, status: int, message: str) -> None:
            self.status, self.message = status, message

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model_calls": batcher.calls, "images": batcher.images}

    @app.get("/model")
    async def model_info() -> dict[str, Any]:
        return {
            "run": run.name,
            "model": meta.get("model"),
            "classes": classes,
            "input_shape": list(shape),
            "dataset": meta.get("dataset"),
            "test_accuracy": meta.get("test_accuracy"),
            "engine": predictor.engine,
            "tta": tta,
            "limits": limits.__dict__,
        }

    body_spec = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                            }
                        },
                        "required": ["file"],
                    }
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_bytes:
            raise BadRequest(413, f"upload larger than {limits.max_bytes:,} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_bytes:
                raise BadRequest(413, f"upload larger than {limits.max_bytes:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def uploads(request: Request) -> list[tuple[str, bytes]]:
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            declared = request.headers.get("content-length")
            total = limits.max_bytes * limits.max_images
            if declared and declared.isdigit() and int(declared) > total:
                raise BadRequest(413, f"request larger than {total:,} bytes")
            try:
                form = await request.form(max_files=limits.max_images, max_fields=limits.max_images,
                                          max_part_size=limits.max_bytes)  # fmt: skip
            except HTTPException as exc:
                raise BadRequest(
                    exc.status_code if exc.status_code < 500 else 400, str(exc.detail)
                ) from None
            except Exception as exc:
                raise BadRequest(400, f"malformed multipart body ({type(exc).__name__})") from None
            items = []
            for key, value in form.multi_items():
                if key not in ("file", "files") or not isinstance(value, UploadFile):
                    raise BadRequest(422, f"unexpected form field {key!r}: send images as 'file'")
                data = await value.read()
                if len(data) > limits.max_bytes:
                    raise BadRequest(
                        413, f"{value.filename}: larger than {limits.max_bytes:,} bytes"
                    )
                items.append((value.filename or "file", data))
            if not items:
                raise BadRequest(422, "no image: send it in a form field named 'file'")
            return items
        # Any other body is the image's bytes (curl --data-binary sends them as form-urlencoded).
        return [("body", await read_body(request))]

    @app.post("/predict", openapi_extra=body_spec)
    async def predict(
        request: Request,
        top_k: int = Query(3, ge=1, le=len(classes), description="classes per image"),
        explain: bool = Query(False, description="add a Grad-CAM heatmap for the top class"),
    ) -> JSONResponse:
        start = time.perf_counter()
        items = await uploads(request)

        def decode_all() -> np.ndarray:
            return np.stack([decode_bytes(data, predictor.image_size, predictor.channels,
                                          limits.max_pixels, name) for name, data in items])  # fmt: skip

        try:
            # Small images decode in well under a millisecond: handing them to a thread would cost
            # more than decoding them here; large ones go to a thread, not to block the loop.
            if sum(len(data) for _, data in items) < 65536:
                images = decode_all()
            else:
                images = await asyncio.to_thread(decode_all)
        except ImageError as exc:
            status = 413 if "pixels allowed" in str(exc) else 400
            raise BadRequest(status, str(exc)) from None
        try:
            probabilities = await asyncio.wait_for(batcher.submit(images), limits.timeout)
        except TimeoutError:
            raise BadRequest(503, f"not answered within {limits.timeout:g} s; try again") from None
        answers = []
        for (name, _), p in zip(items, probabilities, strict=True):
            order = np.argsort(-p)[:top_k]
            answers.append({"image": name, "top": [{"class": classes[i], "probability": round(float(p[i]), 6)} for i in order]})  # fmt: skip
        if explain:
            heatmaps = await asyncio.to_thread(_heatmaps, predictor, images, probabilities)
            for answer, heatmap in zip(answers, heatmaps, strict=True):
                answer["heatmap"] = heatmap
        milliseconds = round(1000 * (time.perf_counter() - start), 1)
        # A response made here skips FastAPI's generic encoder: ~1 ms a request under load.
        return JSONResponse({"predictions": answers, "milliseconds": milliseconds})

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.replace(
            "{{TITLE}}", f"{meta.get('model')} on {(meta.get('dataset') or {}).get('name')}"
        )

    return app


def _heatmaps(
    predictor: Predictor, images: np.ndarray, probabilities: np.ndarray
) -> list[str | None]:
    """Grad-CAM over each image for its top class, as a PNG data URI (None where unavailable)."""
    if predictor.engine != "keras":
        return [None] * len(images)
    from PIL import Image

    from cnnkit.explain import ExplainError, class_activation_maps, overlay

    try:
        maps, _ = class_activation_maps(predictor.model, images, probabilities.argmax(axis=1))
    except ExplainError:
        return [None] * len(images)
    out: list[str | None] = []
    for image, heat in zip(images, maps, strict=True):
        blend = overlay(image, heat)
        picture = Image.fromarray((blend * 255).astype(np.uint8)).resize(
            (192, 192), Image.Resampling.NEAREST
        )
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        out.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out


PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,"><title>cnnkit: {{TITLE}}</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:16px 28px} h1{margin:0;font-size:20px}
main{max-width:860px;margin:0 auto;padding:20px 28px}
#drop{border:2px dashed #8a94a6;border-radius:10px;padding:34px;text-align:center;background:#fff;cursor:pointer}
#drop.over{border-color:#2456b3;background:#eef3fc}
#result{display:flex;gap:24px;margin-top:22px;align-items:flex-start;flex-wrap:wrap}
#result img{width:192px;height:192px;image-rendering:pixelated;border-radius:6px;border:1px solid #ddd}
.bars{flex:1;min-width:280px} .row{display:flex;align-items:center;gap:8px;margin:6px 0}
.name{width:120px;text-align:right;font-size:14px} .track{flex:1;background:#e5e8ee;border-radius:4px}
.bar{height:20px;background:#2456b3;border-radius:4px} .pct{width:64px;font-variant-numeric:tabular-nums}
#error{color:#a4161a;margin-top:14px} figcaption{font-size:13px;color:#5b6475;text-align:center}
</style></head><body>
<header><h1>cnnkit: {{TITLE}}</h1></header>
<main>
<div id="drop">Drop an image here, or <label style="color:#2456b3;text-decoration:underline;cursor:pointer">pick one<input id="pick" type="file" accept="image/*" hidden></label></div>
<div id="error" role="alert"></div>
<div id="result"></div>
</main>
<script>
const drop = document.getElementById("drop"), pick = document.getElementById("pick");
const result = document.getElementById("result"), error = document.getElementById("error");
function el(tag, attrs, text) { const e = document.createElement(tag); Object.assign(e, attrs || {}); if (text) e.textContent = text; return e; }
async function send(file) {
  error.textContent = ""; result.textContent = "";
  const form = new FormData(); form.append("file", file);
  const response = await fetch("/predict?top_k=5&explain=true", {method: "POST", body: form});
  const answer = await response.json();
  if (!response.ok) { error.textContent = answer.error || response.statusText; return; }
  const p = answer.predictions[0];
  const shown = el("figure"); shown.append(el("img", {src: URL.createObjectURL(file), alt: "your image"}), el("figcaption", {}, file.name));
  result.append(shown);
  if (p.heatmap) { const heat = el("figure"); heat.append(el("img", {src: p.heatmap, alt: "Grad-CAM heatmap"}), el("figcaption", {}, "where the evidence for " + p.top[0].class + " lies")); result.append(heat); }
  const bars = el("div", {className: "bars"});
  for (const t of p.top) {
    const row = el("div", {className: "row"}), track = el("div", {className: "track"});
    const bar = el("div", {className: "bar"}); bar.style.width = (100 * t.probability).toFixed(1) + "%";
    track.append(bar); row.append(el("span", {className: "name"}, t.class), track, el("span", {className: "pct"}, (100 * t.probability).toFixed(1) + " %"));
    bars.append(row);
  }
  result.append(bars);
}
pick.addEventListener("change", () => pick.files[0] && send(pick.files[0]));
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]); });
</script></body></html>
"""
