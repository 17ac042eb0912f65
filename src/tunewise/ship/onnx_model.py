"""Predict from an ONNX export with onnxruntime, numpy, Pillow and tokenizers: no torch, no transformers.

`OnnxModel(folder)` reads the folder that `tunewise export --format onnx` wrote (model.onnx,
onnx.json, tokenizer.json for text) and gives the same rows as `tunewise predict`:

    model = OnnxModel("runs/RUN/onnx")
    model.reads                       # "image" (PIL images), "text" (str) or "pair" ((question, context))
    model.predict([Image.open("a.png")])   # [{"label": ..., "probability": ..., "p_<class>": ...}]

How inputs become the graph's feeds, and its outputs rows, depends on what the task's model gives
(`Task.outputs`, recorded as onnx.json's "task_outputs"): one runner per kind, in `RUNNERS`.

Adding a kind (the dense exports' "masks" and "boxes"): write a class with the `Runner` methods
in a module that imports no torch, register it with `@RUNNERS.register("masks")`, and add the
module's name to `RUNNER_MODULES`; `OnnxModel` imports those modules on first use. The export
side is `tunewise.ship.onnx_export` (its `EXPORTS`), which names its modules the same way.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from tunewise.errors import RunFolderError, TunewiseError
from tunewise.registry import Registry
from tunewise.spans import best_span

RUNNER_MODULES: tuple[str, ...] = ("tunewise.ship.dense_decode",)
"""Torch-free modules that register more runners (dense outputs); one not yet written is skipped."""
BATCH = 32
"""Inputs per onnxruntime call (question answering: questions, each one or more windows)."""
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC}
"""torchvision's interpolation names as Pillow's filters (torchvision resizes a PIL image with Pillow)."""


class Runner(Protocol):
    """One kind of output: its inputs as the graph's feeds, and the graph's outputs as rows.

    `__init__(folder, meta)` gets the export folder and onnx.json's contents.
    """

    reads: str
    """What one input is: "image" (a PIL image), "text" (a str) or "pair" ((question, context))."""

    def feeds(self, inputs: list) -> tuple[dict[str, np.ndarray], Any]:
        """The graph's inputs by name for a batch of `inputs`, and what `rows` needs to decode them."""
        ...

    def rows(self, outputs: list[np.ndarray], state: Any) -> list[dict]:
        """One row per input, in order, from the graph's outputs (in onnx.json's "outputs" order)."""
        ...


RUNNERS: Registry[Any] = Registry("ONNX runner")


class OnnxModel:
    """A model exported to ONNX, predicting with onnxruntime (a `Predictor`, tunewise.ship.predictor).

    Args:
        folder: the export's folder (holding model.onnx and onnx.json).
        int8: use model.int8.onnx (refused when the export kept none); None: it when the export kept
            it and measured it faster than fp32 (dynamic int8 convolutions can be several times slower).
        threads: onnxruntime's intra-op threads (None: its default, one per core).

    Raises:
        RunFolderError: the folder holds no ONNX export, or its onnx.json is not what export writes.
    """

    def __init__(self, folder: str | Path, int8: bool | None = None, threads: int | None = None) -> None:
        import onnxruntime  # type: ignore[import-untyped]

        self.folder = Path(folder)
        self.meta = read_onnx_json(self.folder)
        kept = bool(self.meta.get("int8", {}).get("kept"))
        if int8 and not kept:
            raise TunewiseError(f"{str(self.folder)!r} holds no int8 model (the export did not keep one). Export "
                                "again with --int8, or use the fp32 model.")
        self.int8 = (kept and faster(self.meta)) if int8 is None else int8
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        file = self.folder / self.meta["files"]["int8" if self.int8 else "fp32"]
        self.session = onnxruntime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        self.runner = runner_for(self.meta)(self.folder, self.meta)
        self.reads: str = self.runner.reads
        self.info: dict = model_card(self.meta, self.int8)
        self._inputs = [i.name for i in self.session.get_inputs()]

    def predict(self, inputs: list) -> list[dict]:
        """One row per input, in order, as `tunewise predict` gives them (without the echoed input)."""
        if hasattr(self.runner, "predict"):  # a runner that runs one input at a time (detection)
            return list(self.runner.predict(self.session, inputs))
        rows: list[dict] = []
        for chunk in batches(inputs, BATCH):
            feeds, state = self.runner.feeds(chunk)
            outputs = self.session.run(None, {name: feeds[name] for name in self._inputs})
            rows += self.runner.rows(list(outputs), state)
        return rows


def read_onnx_json(folder: Path) -> dict:
    """onnx.json of an export folder, checked for what the runner reads.

    Raises:
        RunFolderError: no model.onnx or onnx.json there, or onnx.json lacks a key export writes.
    """
    if not (folder / "onnx.json").is_file() or not (folder / "model.onnx").is_file():
        raise RunFolderError(f"{str(folder)!r} holds no ONNX export (model.onnx and onnx.json). Write one with: "
                             "tunewise export RUN --format onnx")
    try:
        meta = json.loads((folder / "onnx.json").read_text())
    except ValueError as err:
        raise RunFolderError(f"{str(folder / 'onnx.json')!r} is not JSON ({err}). Export again.") from None
    missing = [key for key in ("task", "task_outputs", "classes", "files", "preprocessing") if key not in meta]
    if missing:
        raise RunFolderError(f"{str(folder / 'onnx.json')!r} lacks {', '.join(missing)}: it is not what "
                             "`tunewise export --format onnx` writes. Export again.")
    return meta


def runner_for(meta: dict) -> type:
    """The runner class of the export's kind of output.

    Raises:
        TunewiseError: no runner for that kind in this tunewise.
    """
    import_present(RUNNER_MODULES)
    kind = meta["task_outputs"]
    if kind not in RUNNERS:
        raise TunewiseError(f"this tunewise cannot run ONNX exports of {meta['task']} models (outputs {kind!r}); it "
                            f"runs {', '.join(RUNNERS.names())}. Serve the run folder with the torch backend.")
    return RUNNERS.get(kind)


@cache
def import_present(modules: tuple[str, ...]) -> None:
    """Import each of `modules` that exists, once: they register more kinds of output (a module not
    yet written is skipped; one that exists and fails to import is a fault to see)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # the module exists and lacks something: that is a fault to see
                raise


def faster(meta: dict) -> bool:
    """Whether the export's int8 model answered one input faster than its fp32 model when measured."""
    figures = meta.get("int8") or {}
    return float(figures.get("int8_latency_ms", "inf")) < float(figures.get("fp32_latency_ms", 0))


def model_card(meta: dict, int8: bool) -> dict:
    """What /metadata shows of the export: task, classes, metric and its validation value, strategy,
    base model, input size or max length, backend, parity, int8, tunewise version."""
    source = meta.get("source", {})
    prep = meta["preprocessing"]
    return {"task": meta["task"], "classes": meta["classes"], "metric": source.get("metric"),
            "metric_value": source.get("val_metric"), "strategy": source.get("strategy"),
            "base_model": source.get("model"), "input_size": prep.get("input_size"),
            "max_length": prep.get("max_length"), "backend": "onnxruntime", "int8": int8,
            "parity_max_abs_diff": meta.get("parity", {}).get("max_abs_diff"),
            "tunewise_version": meta.get("tunewise_version")}


def batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Over the last axis, as transformers' pipelines compute it (shifted exponentials)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# --- images ------------------------------------------------------------------------------------

def preprocess_image(image: Image.Image, spec: dict) -> np.ndarray:
    """`Preprocess.eval_transform()` with Pillow and numpy: resize the shorter side, centre crop,
    scale to [0, 1], normalize. An image that is not RGB is converted with Pillow's `convert`
    (tunewise's own reader, `open_image`, lays transparency on white first: pass RGB images for
    the same pixels).

    Shape: -> (3, input_size, input_size) float32.
    """
    image = image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    side = spec["resize_size"]
    size = (side, int(side * height / width)) if width <= height else (int(side * width / height), side)
    if size != image.size:
        image = image.resize(size, resample=RESAMPLE[spec["interpolation"]])
    crop = spec["input_size"]
    left, top = _crop_start(image.width, crop), _crop_start(image.height, crop)
    image = image.crop((left, top, left + crop, top + crop))  # Pillow fills outside the image with 0s
    pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
    mean, std = np.asarray(spec["mean"], np.float32), np.asarray(spec["std"], np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1)


def _crop_start(size: int, crop: int) -> int:
    """Where torchvision's centre crop starts along one side (padded with 0s when the crop is larger)."""
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


class ImageFeeds:
    """Images in: a batch of preprocessed pixels under the graph's one input name."""

    reads = "image"

    def __init__(self, folder: Path, meta: dict) -> None:
        self.spec = meta["preprocessing"]
        self.name = meta["inputs"][0]["name"]

    def feeds(self, inputs: list) -> tuple[dict[str, np.ndarray], Any]:
        for given in inputs:
            if not isinstance(given, Image.Image):
                raise TunewiseError(f"this model reads images; got {type(given).__name__}. Pass PIL images.")
        return {self.name: np.stack([preprocess_image(image, self.spec) for image in inputs])}, None


# --- text --------------------------------------------------------------------------------------

class TextFeeds:
    """Texts in: tokenized by tokenizer.json with the `tokenizers` library, padded to the longest."""

    reads = "text"

    def __init__(self, folder: Path, meta: dict) -> None:
        from tokenizers import Tokenizer

        self.spec = meta["preprocessing"]
        self.tokenizer = Tokenizer.from_file(str(folder / self.spec["tokenizer"]))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.spec["max_length"], stride=self.spec.get("stride", 0),
                                         strategy=self.spec.get("truncation", "longest_first"))

    def feeds(self, inputs: list) -> tuple[dict[str, np.ndarray], Any]:
        texts = [_text(given) for given in inputs]
        encodings = self.tokenizer.encode_batch(texts)
        return pad(encodings, self.spec["pad_id"]), encodings


def _text(given: object) -> str:
    if not isinstance(given, str) or not given.strip():
        raise TunewiseError(f"this model reads texts; got {given!r}. Pass non-empty strings.")
    return given


def pad(encodings: list, pad_id: int) -> dict[str, np.ndarray]:
    """input_ids, attention_mask and token_type_ids of tokenizers' encodings, padded on the right
    to the longest (ids with `pad_id`, the rest with 0), as tunewise's collate pads them.

    Shape: each -> (len(encodings), longest) int64.
    """
    longest = max(len(e.ids) for e in encodings)
    arrays = {name: np.zeros((len(encodings), longest), np.int64) for name in ("attention_mask", "token_type_ids")}
    arrays["input_ids"] = np.full((len(encodings), longest), pad_id, np.int64)
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        arrays["input_ids"][row, :n] = encoding.ids
        arrays["attention_mask"][row, :n] = encoding.attention_mask
        arrays["token_type_ids"][row, :n] = encoding.type_ids
    return arrays


# --- runners -----------------------------------------------------------------------------------

@RUNNERS.register("class_scores")
class ClassScores:
    """Images or texts in, one class each: label, its probability, and every class's probability."""

    def __init__(self, folder: Path, meta: dict) -> None:
        self.inputs = (ImageFeeds if meta["reads"] == "image" else TextFeeds)(folder, meta)
        self.reads = self.inputs.reads
        self.classes = meta["classes"]

    def feeds(self, inputs: list) -> tuple[dict[str, np.ndarray], Any]:
        return self.inputs.feeds(inputs)

    def rows(self, outputs: list[np.ndarray], state: Any) -> list[dict]:
        rows = []
        for p in softmax(outputs[0].astype(np.float32)):
            best = int(p.argmax())
            rows.append({"label": self.classes[best], "probability": float(p[best]),
                         **{f"p_{c}": float(v) for c, v in zip(self.classes, p, strict=True)}})
        return rows


@RUNNERS.register("token_scores")
class TokenScores:
    """Texts in, entities out: transformers' token-classification pipeline with
    aggregation_strategy="first" (what `tunewise predict` runs), reproduced on tokenizers' encodings.

    Each word takes the tag of its first sub-word; adjacent words of one entity type (B- starts a
    new one) are grouped, scored by the mean of their words' scores; "O" is dropped.
    """

    reads = "text"

    def __init__(self, folder: Path, meta: dict) -> None:
        self.inputs = TextFeeds(folder, meta)
        self.tokenizer = self.inputs.tokenizer
        self.classes = meta["classes"]
        self.unk_id = meta["preprocessing"].get("unk_id")
        self.word_aware = bool(getattr(self.tokenizer.model, "continuing_subword_prefix", None))

    def feeds(self, inputs: list) -> tuple[dict[str, np.ndarray], Any]:
        feeds, encodings = self.inputs.feeds(inputs)
        return feeds, (inputs, encodings)

    def rows(self, outputs: list[np.ndarray], state: Any) -> list[dict]:
        texts, encodings = state
        scores = softmax(outputs[0].astype(np.float32))
        return [{"entities": self.entities(text, encoding, scores[row])}
                for row, (text, encoding) in enumerate(zip(texts, encodings, strict=True))]

    def entities(self, text: str, encoding: Any, scores: np.ndarray) -> list[dict]:
        """Shape: scores (T, C) per token (padded rows past the encoding are ignored)."""
        words: list[list[dict]] = []
        for index, token_id in enumerate(encoding.ids):
            if encoding.special_tokens_mask[index]:
                continue
            token = self.tokenizer.id_to_token(token_id) or ""
            start, end = encoding.offsets[index]
            if token_id == self.unk_id:
                token, subword = text[start:end], False
            elif self.word_aware:
                subword = len(token) != len(text[start:end])
            else:  # the pipeline's fallback for tokenizers that do not mark sub-words
                subword = start > 0 and " " not in text[start - 1:start + 1]
            piece = {"word": token, "scores": scores[index], "start": start, "end": end}
            if subword and words:
                words[-1].append(piece)
            else:
                words.append([piece])
        groups = [self._group(group) for group in _entity_groups([self._word(w) for w in words])]
        return [group for group in groups if group["entity_group"] != "O"]

    def _word(self, pieces: list[dict]) -> dict:
        best = int(pieces[0]["scores"].argmax())
        return {"entity": self.classes[best], "score": pieces[0]["scores"][best], "start": pieces[0]["start"],
                "end": pieces[-1]["end"], "word": self._string([p["word"] for p in pieces])}

    def _group(self, words: list[dict]) -> dict:
        return {"entity_group": words[0]["entity"].split("-", 1)[-1],
                "score": float(np.mean(np.nanmean([w["score"] for w in words]))),
                "word": self._string([w["word"] for w in words]), "start": words[0]["start"], "end": words[-1]["end"]}

    def _string(self, tokens: list[str]) -> str:
        decoder = self.tokenizer.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)


def _entity_groups(words: list[dict]) -> list[list[dict]]:
    """Adjacent words of the same type, a B- tag starting a new group (the pipeline's group_entities)."""
    groups: list[list[dict]] = []
    for word in words:
        bi, tag = _tag(word["entity"])
        if groups and bi != "B" and tag == _tag(groups[-1][-1]["entity"])[1]:
            groups[-1].append(word)
        else:
            groups.append([word])
    return groups


def _tag(entity: str) -> tuple[str, str]:
    if entity.startswith(("B-", "I-")):
        return entity[0], entity[2:]
    return "I", entity


@RUNNERS.register("spans")
class Spans:
    """(question, context) pairs in, the answer span out: the context cut into overlapping windows
    (max_length tokens, doc_stride shared), the best span over all windows as tunewise's question
    answering task decodes it (tasks/_squad.py: top 20 starts x top 20 ends, at most 30 tokens)."""

    reads = "pair"

    def __init__(self, folder: Path, meta: dict) -> None:
        self.inputs = TextFeeds(folder, meta)
        self.spec = meta["preprocessing"]

    def feeds(self, inputs: list) -> tuple[dict[str, np.ndarray], Any]:
        pairs = [_pair(given) for given in inputs]
        context_first = self.spec.get("context_first", False)
        first = 0 if context_first else 1  # which sequence of a window is the context
        windows, owners = [], []
        for i, (question, context) in enumerate(pairs):
            question = question.lstrip()  # as encode_windows: leading spaces only waste tokens
            encoding = self.inputs.tokenizer.encode(*((context, question) if context_first else (question, context)))
            for window in [encoding, *encoding.overflowing]:
                windows.append(window)
                owners.append(i)
        return pad(windows, self.spec["pad_id"]), (pairs, windows, owners, first)

    def rows(self, outputs: list[np.ndarray], state: Any) -> list[dict]:
        pairs, windows, owners, context_id = state
        logits = outputs[0].astype(np.float64)
        best: dict[int, tuple[float, int, int]] = {}
        null: dict[int, float] = {}
        for w, (window, owner) in enumerate(zip(windows, owners, strict=True)):
            offsets = [o if s == context_id else None for o, s in zip(window.offsets, window.sequence_ids, strict=True)]
            start, end = logits[w, :len(offsets), 0], logits[w, :len(offsets), 1]
            null[owner] = min(null.get(owner, np.inf), float(start[0] + end[0]))
            span = best_span(start, end, offsets, self.spec.get("max_answer_tokens", 30))
            if span is not None and (owner not in best or span[0] > best[owner][0]):
                best[owner] = span
        rows: list[dict] = []
        for i, (_, context) in enumerate(pairs):
            span = best.get(i)
            if span is None:
                rows.append({"answer": ""})
            elif self.spec.get("allow_no_answer") and null[i] > span[0]:
                rows.append({"answer": "", "score": null[i]})
            else:
                rows.append({"answer": context[span[1]:span[2]], "score": span[0]})
        return rows


def _pair(given: object) -> tuple[str, str]:
    if (not isinstance(given, list | tuple) or len(given) != 2 or not all(isinstance(x, str) for x in given)
            or not all(x.strip() for x in given)):
        raise TunewiseError(f"this model reads (question, context) pairs of non-empty strings; got {given!r}.")
    return given[0], given[1]
