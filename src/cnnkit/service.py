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

The routes are module-level handlers; what they serve (the predictor, its batcher, the limits)
is the application's ``state.service``, set by :func:`create_app`. Needs the ``serve`` extra.
"""

from __future__ import annotations

from cnnkit.env import require

require(("fastapi", "uvicorn"), "cnnkit serve", "serve")

import asyncio  # noqa: E402
import base64  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from contextlib import asynccontextmanager  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from functools import cache  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from fastapi import APIRouter, FastAPI, Query, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import HTMLResponse, JSONResponse  # noqa: E402
from starlette.datastructures import UploadFile  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402

from cnnkit.data.images import (  # noqa: E402
    MAX_PIXELS,
    SMALL_PIXELS,
    PixelLimitError,
    claimed_pixels,
    decode_bytes,
    release_memory,
)
from cnnkit.errors import CnnkitError, ImageError  # noqa: E402
from cnnkit.predictor import TOP_K, Predictor, answer, predict_probabilities  # noqa: E402
from cnnkit.runs import Run  # noqa: E402

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the service; every value is checked when it is made."""

    max_bytes: int = 10_000_000  # per uploaded image
    max_pixels: int = MAX_PIXELS  # width x height, checked before decoding (decompression bombs)
    max_images: int = 16  # per request
    timeout: float = 10.0  # seconds for a request's images to be answered
    max_batch: int = 64  # images per model call
    wait: float = 0.002  # seconds the batcher waits for more images after the first

    def __post_init__(self) -> None:
        for name, low, high in (("max_bytes", 1, 2**40), ("max_pixels", 1, 2**40),
                                ("max_images", 1, 1024), ("max_batch", 1, 4096)):  # fmt: skip
            value = getattr(self, name)
            if not low <= value <= high:
                raise CnnkitError(f"serve limit {name} must be in {low:,}..{high:,}, got {value:,}")
        if not 0 < self.timeout <= 3600:
            raise CnnkitError(f"serve timeout must be in (0, 3600] seconds, got {self.timeout:g}")
        if not 0 <= self.wait <= 1:
            raise CnnkitError(f"serve wait must be in [0, 1] seconds, got {self.wait:g}")


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


@dataclass(frozen=True)
class Service:
    """What the routes serve: the predictor, its batcher and limits, and the run's record."""

    predictor: Predictor
    batcher: Batcher
    limits: Limits
    tta: int
    meta: dict[str, Any]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.predictor.image_size, self.predictor.channels)

    @property
    def title(self) -> str:
        return f"{self.meta.get('model')} on {(self.meta.get('dataset') or {}).get('name')}"


class BadRequest(Exception):
    """A request the service refuses: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def create_app(predictor: Predictor, limits: Limits | None = None, tta: int = 0) -> Any:
    """The FastAPI application serving ``predictor``'s model.

    ``tta``: test-time augmentation, 0 by default whatever the run's: a service answers one
    image in one pass (the fast recipe's level 2 is six passes, ~6x the latency under load);
    ``cnnkit predict`` uses the run's level. /model says which."""
    limits = limits or Limits()
    meta = predictor.run.meta()
    app = FastAPI(
        title="cnnkit",
        version="1",
        summary=f"{meta.get('model')} trained on {(meta.get('dataset') or {}).get('name')}",
        description="Image classification with a cnnkit run's model.",
        lifespan=_lifespan,
    )
    app.state.service = Service(predictor, Batcher(predictor, tta, limits), limits, tta, meta)
    app.add_exception_handler(BadRequest, _bad_request)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal)
    app.include_router(router)
    return app


def serve(
    run: Run | str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    engine: str = "keras",
    tta: int = 0,
    limits: Limits | None = None,
) -> None:
    """Serve ``run``'s model over HTTP until stopped (``cnnkit serve``): POST /predict, a page
    at /, OpenAPI at /docs. A taken or foreign address is refused before the model loads."""
    import uvicorn

    if not 1 <= port <= 65535:
        raise CnnkitError(f"--port must be in 1..65535, got {port}")
    limits = limits or Limits()
    _check_port(host, port)  # before loading the model, and before saying "serving"
    predictor = Predictor(run, engine=engine)
    app = create_app(predictor, limits, tta)
    log.info(
        "serving %s (%d classes, engine %s) at http://%s:%d/  (API: /predict, /docs)",
        predictor.run.path, len(predictor.class_names), engine, host, port,
    )  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=5)


def _check_port(host: str, port: int) -> None:
    """A one-line error now for an address that is taken or not ours, rather than uvicorn's
    log line after start-up."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as exc:
        raise CnnkitError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port (or --host), "
            f"or stop what is using it"
        ) from None


@asynccontextmanager
async def _lifespan(app: FastAPI) -> Any:
    service: Service = app.state.service
    service.batcher.warm_up(service.shape)
    # The model's objects live as long as the server: out of the collector's way, so that
    # its passes stay short under load (they scan only what requests allocate).
    gc.collect()
    gc.freeze()
    task = asyncio.create_task(service.batcher.run())
    yield
    task.cancel()


# -- errors: always {"error": message} --------------------------------------------------------


async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


# -- routes -----------------------------------------------------------------------------------

router = APIRouter()

BODY_SPEC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["file"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    batcher = _service(request).batcher
    return {"status": "ok", "model_calls": batcher.calls, "images": batcher.images}


@router.get("/model")
async def model_info(request: Request) -> dict[str, Any]:
    service = _service(request)
    return {
        "run": service.predictor.run.name,
        "model": service.meta.get("model"),
        "classes": service.predictor.class_names,
        "input_shape": list(service.shape),
        "dataset": service.meta.get("dataset"),
        "test_accuracy": service.meta.get("test_accuracy"),
        "calibration": service.meta.get("calibration"),
        "engine": service.predictor.engine,
        "tta": service.tta,
        "limits": asdict(service.limits),
    }


@router.post("/predict", openapi_extra=BODY_SPEC)
async def predict(
    request: Request,
    top_k: int = Query(TOP_K, ge=1, description="classes per image (at most the run's classes)"),
    explain: bool = Query(False, description="add a Grad-CAM heatmap for the top class"),
    min_confidence: float = Query(
        0.0,
        ge=0.0,
        le=1.0,
        description='answer "unsure" (class null, unsure true) where the top class\'s '
        "calibrated probability is below this",
    ),
) -> JSONResponse:
    start = time.perf_counter()
    service = _service(request)
    predictor, limits = service.predictor, service.limits
    classes = predictor.class_names
    if top_k > len(classes):
        raise BadRequest(422, f"query.top_k: Input should be less than or equal to {len(classes)}")
    items = await _uploads(request, limits)
    large = False

    def decode_all() -> np.ndarray:
        return np.stack([decode_bytes(data, predictor.image_size, predictor.channels,
                                      limits.max_pixels, name) for name, data in items])  # fmt: skip

    try:
        # Small images decode in well under a millisecond: handing them to a thread would cost
        # more than decoding them here; large ones (by the pixels their headers claim, not by
        # their bytes) go to a thread, not to block the loop.
        large = sum(claimed_pixels(data) for _, data in items) > SMALL_PIXELS
        images = await asyncio.to_thread(decode_all) if large else decode_all()
    except PixelLimitError as exc:
        raise BadRequest(413, str(exc)) from None
    except ImageError as exc:
        raise BadRequest(400, str(exc)) from None
    finally:
        for _, data in items:
            if not isinstance(data, bytes):
                data.close()
        if large:  # what reading and decoding them held goes back to the system
            release_memory()
    try:
        probabilities = await asyncio.wait_for(service.batcher.submit(images), limits.timeout)
    except TimeoutError:
        raise BadRequest(503, f"not answered within {limits.timeout:g} s; try again") from None
    answers = [
        answer(name, p, classes, top_k, min_confidence).to_dict()
        for (name, _), p in zip(items, probabilities, strict=True)
    ]
    if explain:
        heatmaps = await asyncio.to_thread(_heatmaps, predictor, images, probabilities)
        for said, heatmap in zip(answers, heatmaps, strict=True):
            said["heatmap"] = heatmap
    milliseconds = round(1000 * (time.perf_counter() - start), 1)
    # A response made here skips FastAPI's generic encoder: ~1 ms a request under load.
    return JSONResponse({"predictions": answers, "milliseconds": milliseconds})


@router.get("/", response_class=HTMLResponse)
async def page(request: Request) -> str:
    return _page().replace("{{TITLE}}", _service(request).title)


@cache
def _page() -> str:
    from importlib.resources import files

    return files("cnnkit").joinpath("static", "serve.html").read_text(encoding="utf-8")


async def _read_body(request: Request, limits: Limits) -> bytes:
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


async def _uploads(request: Request, limits: Limits) -> list[tuple[str, Any]]:
    """The request's images as (name, bytes or a binary file): multipart ``file`` fields, or
    the whole body. A multipart body is read through a counter that stops it at its limit
    whatever its Content-Length says, and its files stay in spooled temporary files (on disk
    above 1 MB), so a request holds little memory however large it is."""
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        # Any other body is the image's bytes (curl --data-binary sends them as form-urlencoded).
        return [("body", await _read_body(request, limits))]
    declared = request.headers.get("content-length")
    total = limits.max_bytes * limits.max_images + 1_000_000  # the images and the form around them
    if declared and declared.isdigit() and int(declared) > total:
        raise BadRequest(413, f"request larger than {total:,} bytes")
    counted = Request(request.scope, _counting(request.receive, total))
    try:
        form = await counted.form(max_files=limits.max_images, max_fields=limits.max_images,
                                  max_part_size=limits.max_bytes)  # fmt: skip
    except BadRequest:
        raise
    except HTTPException as exc:
        raise BadRequest(
            exc.status_code if exc.status_code < 500 else 400, str(exc.detail)
        ) from None
    except Exception as exc:
        raise BadRequest(400, f"malformed multipart body ({type(exc).__name__})") from None
    items: list[tuple[str, Any]] = []
    try:
        for key, value in form.multi_items():
            if key not in ("file", "files") or not isinstance(value, UploadFile):
                raise BadRequest(422, f"unexpected form field {key!r}: send images as 'file'")
            name = value.filename or "file"
            if value.size is not None and value.size > limits.max_bytes:
                raise BadRequest(413, f"{name}: larger than {limits.max_bytes:,} bytes")
            if value.size == 0:
                raise BadRequest(400, f"{name}: empty upload")
            value.file.seek(0)
            items.append((name, value.file))
    except BadRequest:
        await form.close()
        raise
    if not items:
        raise BadRequest(422, "no image: send it in a form field named 'file'")
    return items


def _counting(receive: Any, limit: int) -> Any:
    """``receive`` that refuses a body once more than ``limit`` bytes have come."""
    seen = 0

    async def counted() -> Any:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise BadRequest(413, f"request larger than {limit:,} bytes")
        return message

    return counted


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
