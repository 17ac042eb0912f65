"""Extractive question answering (SQuAD v1 and v2): a start/end head on every token's features.

Long contexts are cut into overlapping windows (`--max-length`, `--doc-stride`); answers are
mapped back through the tokenizer's offsets, the best span searched up to 30 tokens long, and
SQuAD v2 data may answer "no answer". Exact match and F1 as the official SQuAD script defines
them, as fractions.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from tunewise.backbones import Backbone
from tunewise.backbones.hf import TextEncoder, Tokenize
from tunewise.config import TrainConfig
from tunewise.data.base import DataSplits
from tunewise.data.text import QASet
from tunewise.tasks import TASKS, TaskModel
from tunewise.tasks._squad import best_answers, encode_windows, exact_match, f1, squad_metrics
from tunewise.tasks._text_batches import Encoded, TextTask, encoded_once, text_loader

MAX_ANSWER_TOKENS = 30
QA_MAX_LENGTH = 384


def encode_questions(data: QASet, preprocess: Tokenize, training: bool) -> Encoded:
    """Windows over each context: (start, end) targets to train on, or offsets to decode answers."""
    stride = min(preprocess.doc_stride, preprocess.max_length // 2)

    def encode() -> dict[str, list]:
        return encode_windows(preprocess.tokenizer, data.examples, preprocess.max_length, stride, train=training)

    windows = encoded_once((preprocess.name, preprocess.max_length, stride, training, data.fingerprint()), encode)
    targets: list[tuple[int, int]] | list[int]
    if training:
        targets = list(zip(windows["start_positions"], windows["end_positions"], strict=True))
    else:
        targets = list(range(len(windows["input_ids"])))  # the window's index: metrics decode by it
    return Encoded(windows, targets, windows=windows, examples=data.examples,
                   allow_no_answer=data.has_unanswerable)


@TASKS.add
class QuestionAnswering(TextTask):
    name = "question_answering"
    metric = "f1"
    cacheable = False  # a window's features are (T, H) for hundreds of tokens: recompute instead
    path_help = ("a text file (.csv, .tsv, .jsonl, .json, .parquet, SQuAD JSON) or a folder of "
                 "train/validation[/test] files")
    per_token = True
    labelled = False
    outputs = "spans"
    rankable = False
    max_length = QA_MAX_LENGTH
    data_kind = QASet
    reads = "SQuAD-style questions over contexts"
    transformers_head = ("AutoModelForQuestionAnswering", "qa_outputs")

    def export_facts(self, splits: DataSplits) -> dict:
        """Predict answers "" (no answer) only for a model trained on unanswerable questions (SQuAD v2)."""
        return {"unanswerable": cast(QASet, splits.train).has_unanswerable}

    def build_model(self, backbone: Backbone, classes: list[str]) -> TaskModel:
        cast(TextEncoder, backbone.model).use_tokens()  # a text backbone's (check_backbone_fits)
        return TaskModel(backbone.model, nn.Linear(backbone.num_features, 2), backbone.layer_groups)

    def loader(self, data: QASet, preprocess: Tokenize, train: TrainConfig, training: bool) -> DataLoader:
        return text_loader(encode_questions(data, preprocess, training), preprocess.tokenizer, train, training)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Shape: outputs (B, T, 2) start and end logits, targets (B, 2) token indices -> scalar."""
        return (F.cross_entropy(outputs[..., 0], targets[:, 0]) + F.cross_entropy(outputs[..., 1], targets[:, 1])) / 2

    def metrics(self, outputs: list[torch.Tensor], targets: list[torch.Tensor], data: Encoded) -> dict:
        """Exact match and F1 over the examples (and per answerable / unanswerable group)."""
        return squad_metrics(self.answers(outputs, data), data.extra["examples"])

    metrics_names = ("f1", "exact_match")

    def example_stats(self, outputs: list[torch.Tensor], targets: list[torch.Tensor], data: Encoded) -> np.ndarray:
        """Per question: (exact match, F1), as the official script scores it. Shape: -> (N, 2)."""
        answers = self.answers(outputs, data)
        return np.array([[exact_match(answers.get(e.id, ""), [a["text"] for a in e.answers]),
                          f1(answers.get(e.id, ""), [a["text"] for a in e.answers])]
                         for e in data.extra["examples"]], dtype=float).reshape(-1, 2)

    def metric_from_stats(self, stats: np.ndarray, metric: str) -> float:
        return float(stats[:, {"exact_match": 0, "f1": 1}[metric]].mean())

    def answers(self, outputs: list[torch.Tensor], data: Encoded) -> dict[str, str]:
        """The best span of each example (over all its windows), by example id."""
        logits = [row for batch in outputs for row in batch.float()]
        return best_answers([x[:, 0] for x in logits], [x[:, 1] for x in logits], data.extra["windows"],
                            data.extra["examples"], max_answer_length=MAX_ANSWER_TOKENS,
                            allow_no_answer=data.extra["allow_no_answer"])
