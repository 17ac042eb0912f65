"""`tunewise serve`: a fitted model (ONNX when exported, else torch) behind HTTP, on FastAPI and uvicorn.

    POST /predict   images (multipart uploads, or JSON {"images": [base64, ...]}), texts ({"texts": [...]})
                    or question/context pairs ({"pairs": [{"question", "context"}, ...]});
                    answers {"predictions": [one row per input, as `tunewise predict` gives]}
    GET  /health    {"status": "ok", ...} and the batching counters
    GET  /metadata  the model: task, classes, metric and its validation value, strategy, base model, ...
    GET  /docs      the OpenAPI docs (/openapi.json)
    GET  /          a web page: upload an image or type a text, see the prediction drawn

Concurrent requests share model calls (ship/batching.py). A bad request gets a 4xx with
{"error": "what was wrong, and what is expected"}; nothing is ever written to the run folder.
Imports no torch: an ONNX export is served without it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from tunewise.errors import TunewiseError
from tunewise.ship.batching import Batcher
from tunewise.ship.predictor import (
    EXPECTED,
    Backend,
    BadInput,
    Precision,
    Predictor,
    WrongMediaType,
    inputs_from_json,
    load_predictor,
    read_images,
)

ENDPOINTS = "POST /predict, GET /health, GET /metadata, GET /docs, GET / (the web page)"
MB = 1 << 20


class Predictions(BaseModel):
    """One row per input, in order: label, probability and p_<class> (classification), entities, answer,
    objects (boxes), or mask_png and classes."""

    predictions: list[dict[str, Any]]


class Problem(BaseModel):
    """A request the server refused: what was wrong, and what is expected."""

    error: str


PREDICT_BODY: dict[str, Any] = {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/json": {"schema": {"oneOf": [
        {"type": "object", "properties": {"images": {"type": "array", "items": {"type": "string",
                                                                                 "format": "byte"}}},
         "required": ["images"], "additionalProperties": False},
        {"type": "object", "properties": {"texts": {"type": "array", "items": {"type": "string"}}},
         "required": ["texts"], "additionalProperties": False},
        {"type": "object", "properties": {"pairs": {"type": "array", "items": {
            "type": "object", "properties": {"question": {"type": "string"}, "context": {"type": "string"}},
            "required": ["question", "context"]}}}, "required": ["pairs"], "additionalProperties": False},
    ]}}}}


def make_app(predictor: Predictor, max_upload_mb: float = 10, max_batch: int = 32,
             batch_window_ms: float = 5.0) -> FastAPI:
    """The app serving `predictor`: the endpoints above, batching concurrent requests.

    Args:
        max_upload_mb: the largest request body accepted (413 above it).
        max_batch: the most inputs one model call takes.
        batch_window_ms: how long a request waits for others to share its model call.
    """
    batcher = Batcher(predictor.predict, max_batch=max_batch, window_ms=batch_window_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    info = predictor.info
    app = FastAPI(title=f"tunewise: {info.get('task')} ({info.get('backend')})", lifespan=lifespan,
                  version=str(info.get("tunewise_version")),
                  description=f"A model fine-tuned by tunewise. This model reads {predictor.reads}s: POST "
                              f"{EXPECTED[predictor.reads]} to /predict.")
    app.add_middleware(UploadLimit, limit=int(max_upload_mb * MB))
    _add_error_handlers(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("tunewise.ship").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Whether the server answers, and how it has batched so far."""
        return {"status": "ok", "backend": info.get("backend"), "batches": batcher.batches,
                "inputs": batcher.inputs, "largest_batch": batcher.largest, "max_batch": max_batch}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        """The model: task, classes, metric and its validation value, strategy, base model, input size,
        backend (and for ONNX its parity figure and int8 or not), tunewise version; `reads` says what
        /predict takes."""
        return {**info, "reads": predictor.reads, "expects": EXPECTED[predictor.reads]}

    @app.post("/predict", response_model=Predictions, openapi_extra={"requestBody": PREDICT_BODY},
              responses={code: {"model": Problem} for code in (400, 413, 415)})
    async def predict(request: Request) -> dict[str, Any]:
        """One prediction per input; a request may carry many (a batch)."""
        inputs = await read_inputs(request, predictor.reads)
        rows = await asyncio.gather(*map(asyncio.wrap_future, batcher.submit(inputs)))
        return {"predictions": list(rows)}

    return app


async def read_inputs(request: Request, reads: str) -> list[Any]:
    """The request's inputs for a model that reads `reads`, checked and decoded (images made RGB).

    Raises:
        BadInput: see `inputs_from_json` and `read_images`; a form with no files or with other fields.
        WrongMediaType: a body that is neither JSON nor multipart/form-data.
    """
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    expected = f"This model reads {reads}s: send {EXPECTED[reads]}."
    if kind == "multipart/form-data":
        if reads != "image":
            raise BadInput(f"a file upload was sent. {expected}")
        files = await _uploads(request, expected)
    elif kind == "application/json":
        try:
            body = json.loads(await request.body())
        except ValueError as err:  # not JSON, or not UTF-8
            raise BadInput(f"the body is not valid JSON ({err}). {expected}") from None
        files = inputs_from_json(body, reads)
        if reads != "image":
            return files
    else:
        raise WrongMediaType(f"the body's content type is {kind or 'not given'}. {expected}")
    return await run_in_threadpool(read_images, files)


async def _uploads(request: Request, expected: str) -> list[tuple[str, bytes]]:
    async with request.form() as form:
        fields = sorted({name for name, value in form.multi_items() if not isinstance(value, UploadFile)})
        if fields:
            raise BadInput(f"form field{'s' if len(fields) > 1 else ''} {', '.join(map(repr, fields))} "
                           f"{'are' if len(fields) > 1 else 'is'} not a file. {expected}")
        files = [(f"file {value.filename or index}", await value.read())
                 for index, (_, value) in enumerate(form.multi_items()) if isinstance(value, UploadFile)]
    if not files:
        raise BadInput(f"the form holds no files. {expected}")
    return files


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal as {"error": ...}: bad input (400, 415), too large (413), no such endpoint (404, 405)."""

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=getattr(err, "status", 400))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, HTTPException)
        detail = err.detail
        if err.status_code in (404, 405):
            detail = f"no endpoint {request.method} {request.url.path}. The endpoints: {ENDPOINTS}."
        return JSONResponse({"error": detail}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error ({type(err).__name__}: {err}); the server keeps "
                                      "serving. Please report it with the request that caused it."},
                            status_code=500)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class UploadLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413, refused on its Content-Length before it
    is read, or as soon as a body sent without one (chunked) passes the limit."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"error": self.refusal(int(declared))}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, self.refusal(received, at_least=True))
            return message

        await self.app(scope, counted, send)

    def refusal(self, size: int, at_least: bool = False) -> str:
        return (f"the request is {'over ' if at_least else ''}{size / MB:.1f} MB, above this server's upload limit "
                f"of {self.limit / MB:g} MB (--max-upload-mb). Send fewer or smaller files per request, or start "
                "the server with a higher --max-upload-mb.")


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 32,
          batch_window_ms: float = 5.0, max_upload_mb: float = 10, backend: Backend = "auto",
          precision: Precision = "auto", quiet: bool = False) -> None:
    """Serve the model in `path` (see `load_predictor`) on http://host:port until interrupted.

    Args:
        port: 0 takes any free port; the address served is printed either way.
        quiet: no access log.

    Raises:
        TunewiseError: nothing servable in `path`, or the address cannot be listened on.
    """
    import uvicorn

    with _listen(host, port) as listening:  # a port in use is refused before the model loads, not after
        predictor = load_predictor(path, backend, precision)
        app = make_app(predictor, max_upload_mb=max_upload_mb, max_batch=max_batch, batch_window_ms=batch_window_ms)
        shown = f"[{host}]" if ":" in host else host
        print(f"serving {path} ({predictor.info.get('task')}, {predictor.info.get('backend')}) at "
              f"http://{shown}:{listening.getsockname()[1]}/ (API docs: /docs); Ctrl-C stops it", flush=True)
        config = uvicorn.Config(app, log_level="warning" if quiet else "info", access_log=not quiet)
        uvicorn.Server(config).run(sockets=[listening])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as err:
        raise TunewiseError(f"cannot listen on {host}:{port} ({err.strerror or err}). Pass another --port "
                            "(0: any free port) or --host.") from None
