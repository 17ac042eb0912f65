"""What `tunewise serve` serves: the Predictor protocol, the predictor for a folder (ONNX when an export
is there, else the fitted torch model), its metadata, and a request's inputs checked and decoded.

Imports no torch: an ONNX export is served without it installed (the torch predictor loads torch itself).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any, Literal, Protocol

from PIL import Image

from tunewise.errors import DataError, TunewiseError

Backend = Literal["auto", "onnx", "torch"]
Precision = Literal["auto", "fp32", "int8"]
Reads = Literal["image", "text", "pair"]

ONNX_PLACES = (".", "onnx", "model/onnx")
"""Where an ONNX export's model.onnx may sit under the folder given: the export itself, beside a fit's
model (RUN/onnx) or beside a search winner's (RUN/model/onnx)."""

FIELDS: dict[str, str] = {"image": "images", "text": "texts", "pair": "pairs"}
"""The JSON field that carries each kind of input."""

EXPECTED: dict[str, str] = {
    "image": 'image files as multipart/form-data (any field name, e.g. "files"), or JSON {"images": '
             '["<base64 of an image file>", ...]}',
    "text": 'JSON {"texts": ["a text", ...]}',
    "pair": 'JSON {"pairs": [{"question": "...", "context": "..."}, ...]}',
}
"""What a request to each kind of model must hold, for error messages and the docs."""


class Predictor(Protocol):
    """A model behind the server: one row per input, as `tunewise predict` gives them (without the
    path or text it echoes)."""

    info: dict[str, Any]
    """Metadata for GET /metadata (see `describe`)."""
    reads: str
    """What one input is: "image" (an RGB PIL image), "text" (str) or "pair" ((question, context))."""

    def predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        """One row per input, in order; plain JSON values only."""
        ...


class BadInput(TunewiseError):
    """A request the model cannot answer: the server sends it back as a 4xx with this message."""

    status = 400


class WrongMediaType(BadInput):
    """A request body that is neither JSON nor multipart/form-data."""

    status = 415


def load_predictor(path: str | Path, backend: Backend = "auto", precision: Precision = "auto") -> Predictor:
    """The predictor for a fit run folder, a search folder (its winner), a model folder or an ONNX export.

    Args:
        backend: "auto": onnxruntime when an ONNX export is there (see ONNX_PLACES), else torch;
            "onnx" or "torch": that one, or an error saying why not.
        precision: of an ONNX export: "int8" or "fp32" (an error when the export kept no int8 model);
            "auto": int8 when the export kept one and measured it faster than fp32.

    Raises:
        TunewiseError: nothing servable there, or the backend asked for is missing.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise TunewiseError(f"{str(path)!r} is not a folder. Pass a run folder written by `tunewise fit` or "
                            "`tunewise search`, or an ONNX export folder.")
    export = onnx_folder(folder)
    if backend == "onnx" or (backend == "auto" and export is not None):
        return _onnx_predictor(folder, export, precision)
    from tunewise.ship.torch_predictor import TorchPredictor

    try:
        return TorchPredictor(folder)
    except ModuleNotFoundError as err:  # a slim install: onnxruntime, no torch
        if (err.name or "").partition(".")[0] != "torch":
            raise
        raise TunewiseError(f"{str(path)!r} holds no ONNX export, and serving its torch model needs torch "
                            f"({err}). Export it where torch is installed: tunewise export {path} --format onnx."
                            ) from None


def _onnx_predictor(folder: Path, export: Path | None, precision: Precision) -> Predictor:
    if export is None:
        raise TunewiseError(f"{str(folder)!r} holds no ONNX export (model.onnx in it, or in onnx/ or model/onnx/ "
                            f"under it). Export one: tunewise export {folder} --format onnx; or serve the torch "
                            "model: --backend torch.")
    try:
        from tunewise.ship.onnx_model import OnnxModel
    except ImportError as err:  # onnxruntime or tokenizers missing
        raise TunewiseError(f"serving an ONNX export needs onnxruntime ({err}). Install it: "
                            "pip install 'tunewise[serve]'.") from None
    model: Predictor = OnnxModel(export, int8=None if precision == "auto" else precision == "int8")
    return model


def onnx_folder(folder: Path) -> Path | None:
    """The ONNX export under `folder` (see ONNX_PLACES), or None."""
    return next((folder / place for place in ONNX_PLACES if (folder / place / "model.onnx").is_file()), None)


def reads_of(modality: str, outputs: str) -> Reads:
    """What one input of a task is, from its modality and its `Task.outputs`: images, texts, or
    (question, context) pairs for a model that gives answer spans."""
    if modality == "image":
        return "image"
    return "pair" if outputs == "spans" else "text"


def describe(folder: Path, model_json: dict[str, Any], backend: str) -> dict[str, Any]:
    """The metadata of the model exported in `folder`, for GET /metadata: task, classes, the selection
    metric and its validation value ("metric_value": the run's record.json, beside model.json in a fit's folder and a
    search's model/; else the search's leaderboard.json), strategy, base model, input size (images) or
    max_length (text), backend, tunewise version.

    Args:
        model_json: the export's model.json, as written (preprocess a dict).
    """
    from tunewise import __version__

    record = _json_or_empty(folder / "record.json")
    board = _json_or_empty(folder.parent / "leaderboard.json")
    metric = record.get("metric") or board.get("metric")
    preprocess = model_json.get("preprocess")
    return {
        "task": model_json.get("task"), "classes": model_json.get("classes"), "metric": metric,
        "metric_value": record.get("val", {}).get(metric) if record else _winner_mean(board),
        "strategy": record.get("strategy") or board.get("winner"),
        "base_model": model_json.get("source") or record.get("model"),
        "input_size": preprocess.get("input_size") if isinstance(preprocess, dict) else None,
        "max_length": model_json.get("max_length"), "backend": backend, "tunewise_version": __version__,
    }


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):  # absent (an export copied elsewhere) or not ours: metadata goes without
        return {}
    return found if isinstance(found, dict) else {}


def _winner_mean(board: dict[str, Any]) -> float | None:
    arms = [arm for arm in board.get("arms", []) if arm.get("strategy") == board.get("winner")]
    return arms[0].get("mean") if arms else None


def plain(value: Any) -> Any:
    """`value` with numpy scalars and tuples made plain JSON values (pipelines return numpy ints)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value


# --- a request's inputs ---------------------------------------------------------------------------

def inputs_from_json(body: Any, reads: str) -> list[Any]:
    """The inputs a JSON body holds for a model that reads `reads`: images as (name, bytes) to be
    decoded by `read_images`, texts as str, pairs as (question, context).

    Raises:
        BadInput: not an object with the one field this model reads, an empty list, or an item of the
            wrong kind (not base64, an empty text, a pair without its question or context).
    """
    expected = f"This model reads {reads}s: send {EXPECTED[reads]}."
    if not isinstance(body, dict) or not body:
        raise BadInput(f"the JSON body is {_kind(body)}, not an object with a field of inputs. {expected}")
    field = FIELDS[reads]
    kinds = [kind for kind, other in FIELDS.items() if other in body and kind != reads]
    if kinds:
        raise BadInput(f"this model reads {reads}s, not {kinds[0]}s ({FIELDS[kinds[0]]!r} was sent). {expected}")
    others = sorted(set(body) - {field})
    if others:
        raise BadInput(f"unexpected field{'s' if len(others) > 1 else ''} {', '.join(map(repr, others))}. {expected}")
    if field not in body:
        raise BadInput(f"no {field!r} field. {expected}")
    items = body[field]
    if not isinstance(items, list) or not items:
        raise BadInput(f"{field!r} must be a non-empty list, got {_kind(items)}. {expected}")
    read = {"image": _base64_image, "text": _text, "pair": _pair}[reads]
    return [read(item, f"{field}[{i}]", expected) for i, item in enumerate(items)]


def _base64_image(item: Any, where: str, expected: str) -> tuple[str, bytes]:
    if not isinstance(item, str):
        raise BadInput(f"{where} is {_kind(item)}, not a base64 string. {expected}")
    encoded = item.partition("base64,")[2] if item.startswith("data:") else item  # a data: URL as browsers write it
    try:
        return where, base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{where} is not valid base64. {expected}") from None


def _text(item: Any, where: str, expected: str) -> str:
    if not isinstance(item, str):
        raise BadInput(f"{where} is {_kind(item)}, not a string. {expected}")
    if not item.strip():
        raise BadInput(f"{where} is an empty text. {expected}")
    return item


def _pair(item: Any, where: str, expected: str) -> tuple[str, str]:
    if not isinstance(item, dict) or set(item) != {"question", "context"}:
        keys = f"fields {sorted(item)}" if isinstance(item, dict) else _kind(item)
        raise BadInput(f"{where} has {keys}; each pair is an object with exactly 'question' and 'context'. {expected}")
    return _text(item["question"], f"{where}.question", expected), _text(item["context"], f"{where}.context", expected)


def _kind(value: Any) -> str:
    if isinstance(value, list | dict | str) and not value:
        return f"an empty {type(value).__name__}"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def read_images(files: list[tuple[str, bytes]]) -> list[Image.Image]:
    """Each (name, bytes) decoded and made RGB as tunewise reads image files (`read_image_bytes`: the same
    conversions, and the same pixel limit against decompression bombs).

    Raises:
        BadInput: a file that is empty, not an image, or above the pixel limit, named.
    """
    from tunewise.data.images import IMAGE_SUFFIXES, read_image_bytes

    images = []
    for name, data in files:
        if not data:
            raise BadInput(f"{name} is empty: send image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        try:
            images.append(read_image_bytes(data))
        except DataError as err:  # PIL names the stream it could not identify: say "it" instead
            why = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(err))
            raise BadInput(f"{name} is not an image tunewise can read: {why}. Send image files "
                           f"({', '.join(sorted(IMAGE_SUFFIXES))}).") from None
    return images
