"""evaluate() and predict() on an exported model: a run folder in, metrics or labels out."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from tunewise.config import DataConfig, TrainConfig
from tunewise.data import ImageSet, load_data
from tunewise.data.images import IMAGE_SUFFIXES
from tunewise.data.text import QAExample, QASet
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.export import load_model, model_info
from tunewise.export_check import check_transformers, transformers_files
from tunewise.features import to_cpu, to_device
from tunewise.tasks import Task, get_task, task_for


def evaluate(run: str | Path, data: str | DataConfig, split: str = "test", batch_size: int = 64) -> dict[str, Any]:
    """The task metrics of the model in `run` on one split of `data`.

    Raises:
        TunewiseError: no such split, or classes that differ from the model's.
    """
    model, info = load_model(run)
    splits = load_data(data if isinstance(data, DataConfig) else DataConfig(data=data), info["task"])
    named = splits.named()
    if split not in named:
        raise TunewiseError(f"data has no {split!r} split; it has {', '.join(named)}.")
    if splits.classes != info["classes"]:
        raise TunewiseError(f"the data's classes {splits.classes} differ from the model's "
                            f"{info['classes']}. Evaluate on data with the same classes.")
    task = task_for(info["task"], **info)  # made as exported: its classes (NER's tags), its detector
    loader = task.loader(named[split], info["preprocess"], TrainConfig(batch_size=batch_size, num_workers=0),
                         training=False)
    outputs, targets = _run(model, loader, task)
    return {"split": split, "examples": len(named[split]), **task.metrics(outputs, targets, loader.dataset)}


def predict(run: str | Path, inputs: list[str | Path], batch_size: int = 64,
            out: str | Path | None = None, **options: Any) -> list[dict[str, Any]]:
    """Labels and class probabilities for image files or folders of images (texts for text
    models; boxes or masks for detection and segmentation models; completions for generators).

    Args:
        out: detection and segmentation: a folder for COCO JSON results or PNG masks, and the
            predictions drawn on the images.
        options: a generator's max_new_tokens, temperature and top_p (greedy without the last two).

    Returns:
        One dict per image: path, label, probability, and every class's probability.
    """
    _, info = model_info(run)
    task = get_task(info["task"])
    given = {k: v for k, v in options.items() if v is not None}
    own = task.predict(run, inputs, batch_size, **given)
    if own is not None:  # a task that reads its own kind of input
        return own
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ConfigError(f"{flags} set how a generator writes (causal_lm); this is a {task.name} model. Leave "
                          "them out.")
    if task.dense:
        from tunewise.dense_predict import predict_dense

        model, info = load_model(run)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return predict_dense(model.to(device), info, image_files(inputs), out)
    if task.modality == "text":  # the text paths load the model their own way
        return predict_text(model_info(run)[0], [str(x) for x in inputs], task)
    model, info = load_model(run)
    files = image_files(inputs)
    images = ImageSet(items=files, labels=[0] * len(files), classes=info["classes"], source="predict",
                      transform=info["preprocess"].eval_transform())
    logits, _ = _run(model, DataLoader(images, batch_size=batch_size))
    rows = class_rows(info["classes"], torch.cat(logits))
    return [{"path": str(path), **row} for path, row in zip(files, rows, strict=True)]


def classify_images(model: nn.Module, info: dict[str, Any], images: list[Image.Image]) -> list[dict[str, Any]]:
    """`class_rows` for images already in memory, preprocessed as `predict` does its files (the
    model's eval transform on the RGB image).

    Args:
        info: the model's model.json as `load_model` returns it (its Preprocess and classes).
    """
    transform = info["preprocess"].eval_transform()
    logits, _ = _run(model, [(torch.stack([transform(image) for image in images]), None)])
    return class_rows(info["classes"], torch.cat(logits))


def class_rows(classes: list[str], logits: torch.Tensor) -> list[dict[str, Any]]:
    """One row per example: the label, its probability, and every class's probability (`p_<class>`).

    Shape:
        logits: (N, C), C = len(classes).
    """
    rows = []
    for p in logits.softmax(1):
        best = int(p.argmax())
        rows.append({"label": classes[best], "probability": float(p[best]),
                     **{f"p_{c}": float(v) for c, v in zip(classes, p, strict=True)}})
    return rows


def image_files(inputs: list[str | Path]) -> list[Path]:
    """Image files named directly, plus the images anywhere under named folders, sorted. A named
    file must have an image's suffix too: a text file given to an image model is refused up front
    with what the model reads, not failed on as an unreadable image."""
    files: list[Path] = []
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    for given in map(Path, inputs):
        if given.is_dir():
            files += sorted(p for p in given.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif not given.is_file():
            raise DataError(f"{str(given)!r} does not exist. Pass image files or folders of images.")
        elif given.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{str(given)!r} is not an image: this model reads images ({suffixes}). Pass image "
                            "files or folders of images.")
        else:
            files.append(given)
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}: this model reads images "
                        f"({suffixes}). Pass image files or folders of images.")
    return files


def predict_text(run: Path, inputs: list[str], task: Task) -> list[dict[str, Any]]:
    """Run an exported text model (its folder) through transformers' own pipeline (the export's proof).

    Inputs are texts, or .txt files of one text per line; question answering takes lines of
    `question ||| context`.
    """
    texts = [text for given in inputs for text in _texts(given)]
    if not texts:
        raise DataError("no texts given. Pass texts, or .txt files with one text per line.")
    if task.pipeline is None:  # question answering: transformers 5 has no QA pipeline; decode as evaluate does
        return answer_questions(run, [_question_and_context(t) for t in texts])
    rows = text_rows(text_pipeline(run, task), texts, task)
    return [{"text": text, **row} for text, row in zip(texts, rows, strict=True)]


def text_pipeline(run: Path, task: Task) -> Any:
    """transformers' pipeline for the exported text model in `run` (a task with a pipeline).

    Raises:
        RunFolderError: the export's head does not fit its config (check_transformers).
    """
    from transformers import pipeline

    assert task.pipeline is not None, "question answering is decoded by tunewise (answer_questions)"
    device = 0 if torch.cuda.is_available() else -1
    check_transformers(run, task)  # the pipeline would fill a mis-shaped head with random weights
    options: dict[str, Any] = {"aggregation_strategy": "first"} if task.per_token else {"top_k": None}
    with transformers_files(run):
        # transformers types pipeline() per literal task name; ours is the task's own (str)
        return pipeline(task.pipeline, model=str(run), device=device, **options)  # type: ignore[call-overload]


def text_rows(pipe: Any, texts: list[str], task: Task) -> list[dict[str, Any]]:
    """One row per text from `text_pipeline`'s pipeline: its entities (token classification), or
    its label, probability and every class's probability."""
    if task.per_token:
        return [{"entities": [{**e, "score": float(e["score"])} for e in pipe(t)]} for t in texts]
    rows = []
    for scores in pipe(texts):
        best = max(scores, key=lambda s: s["score"])
        rows.append({"label": best["label"], "probability": best["score"],
                     **{f"p_{s['label']}": s["score"] for s in scores}})
    return rows


def _texts(given: str) -> list[str]:
    """The text itself, or the non-blank lines of the text file it names; a folder or a file that
    is not text (an image) is refused: this model reads texts."""
    path = Path(given)
    reads = "this model reads texts: pass texts, or .txt files with one text per line."
    if path.is_dir():
        raise DataError(f"{given!r} is a folder; {reads}")
    if not path.is_file():
        return [given]
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{given!r} is not a text file (not UTF-8 text); {reads}") from None


class _Answers(Protocol):
    """A task that decodes its outputs into answers itself (question answering)."""

    def answers(self, outputs: list[torch.Tensor], data: Any) -> dict[str, str]: ...


def answer_questions(run: str | Path, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The best answer span of each (question, context), read from the exported model."""
    model, info = load_model(run)
    answers = answer_pairs(model, info, pairs)
    return [{"question": q, "context": c, "answer": a} for (q, c), a in zip(pairs, answers, strict=True)]


def answer_pairs(model: nn.Module, info: dict[str, Any], pairs: list[tuple[str, str]]) -> list[str]:
    """The best answer span of each (question, context), from a model `load_model` rebuilt."""
    examples = [QAExample(id=str(i), question=q, context=c) for i, (q, c) in enumerate(pairs)]
    task = get_task(info["task"])
    loader = task.loader(QASet(examples, source="predict"), info["preprocess"], TrainConfig(num_workers=0),
                         training=False)
    # "no answer" as the model was trained: these pairs have no gold answers to tell
    cast(Any, loader.dataset).extra["allow_no_answer"] = info.get("unanswerable", True)
    outputs, _ = _run(model, loader)
    answers = cast(_Answers, task).answers(outputs, loader.dataset)
    return [answers[str(i)] for i in range(len(pairs))]


def _question_and_context(line: str) -> tuple[str, str]:
    question, sep, context = line.partition("|||")
    if not sep:
        raise DataError(f"question answering input {line[:60]!r} has no '|||'. Write each input as "
                        "'question ||| context'.")
    return question.strip(), context.strip()


@torch.no_grad()
def _run(model: nn.Module, loader: Iterable[tuple[Any, Any]], task: Task | None = None) -> tuple[list[Any], list[Any]]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    compact = getattr(task, "compact", lambda outputs: outputs)
    outputs, targets = [], []
    for inputs, labels in loader:
        outputs.append(to_cpu(compact(model(to_device(inputs, device)))))
        targets.append(labels)
    if not outputs:
        raise TunewiseError("no examples to run the model on.")
    return outputs, targets
