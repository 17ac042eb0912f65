"""The Predictor protocol on the fitted torch model: loaded once, kept in memory, and run through the
same functions as `tunewise predict` (tunewise.inference, tunewise.dense_predict), so the rows are its rows.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunewise.ship.predictor import describe, plain, reads_of

Rows = Callable[[list[Any]], list[dict[str, Any]]]


class TorchPredictor:
    """The model exported in a run folder (a fit's, a search's, or its model/), on torch.

    Rows: image and text classification {"label", "probability", "p_<class>"...}; token classification
    {"entities": [...]}; question answering {"answer"}; a generator {"prompt", "completion"} (greedy);
    detection {"objects": [{"label", "score", "box"}]} (the boxes `tunewise predict` prints);
    segmentation {"mask_png": base64 palette PNG of class indices, "classes": {class: share of the pixels}}.
    """

    def __init__(self, run: str | Path) -> None:
        from tunewise.export import model_info
        from tunewise.tasks import get_task

        folder, model_json = model_info(run)
        task = get_task(model_json["task"])
        self.info: dict[str, Any] = describe(folder, model_json, backend="torch")
        self.reads: str = reads_of(task.modality, task.outputs)
        if task.dense:
            self._rows = _dense(folder)
        elif task.outputs == "next_token_scores":
            self._rows = _completions(folder, task)
        elif self.reads == "text":
            self._rows = _texts(folder, task)
        elif self.reads == "pair":
            self._rows = _answers(folder)
        else:
            self._rows = _classes(folder)

    def predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        """One row per input (RGB PIL images, texts, or (question, context) pairs), in order."""
        return [plain(row) for row in self._rows(inputs)]


def _loaded(folder: Path) -> tuple[Any, dict[str, Any]]:
    import torch

    from tunewise.export import load_model

    model, info = load_model(folder)
    return model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu")), info


def _classes(folder: Path) -> Rows:
    from tunewise.inference import classify_images

    model, info = _loaded(folder)
    return lambda images: classify_images(model, info, images)


def _texts(folder: Path, task: Any) -> Rows:
    from tunewise.inference import text_pipeline, text_rows

    pipe = text_pipeline(folder, task)
    return lambda texts: text_rows(pipe, texts, task)


def _completions(folder: Path, task: Any) -> Rows:
    from tunewise.tasks.causal_lm import Completer

    return Completer(folder, task)


def _answers(folder: Path) -> Rows:
    from tunewise.inference import answer_pairs

    model, info = _loaded(folder)
    return lambda pairs: [{"answer": answer} for answer in answer_pairs(model, info, pairs)]


def _dense(folder: Path) -> Rows:
    import torch

    from tunewise.dense_predict import detects_boxes, predict_image, result_row

    model, info = _loaded(folder)

    def rows(images: list[Any]) -> list[dict[str, Any]]:
        with torch.no_grad():
            results = [predict_image(model, image, info) for image in images]
        if detects_boxes(info):
            return [result_row(result, info) for result in results]
        return [{"mask_png": mask_png(result.numpy()), **result_row(result, info)}
                for result in results]

    return rows


def mask_png(mask: Any) -> str:
    """Class indices (H, W) as a base64 palette PNG (the index survives; it views in colour)."""
    from tunewise.dense_predict import palette_mask

    buffer = io.BytesIO()
    palette_mask(mask).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
