"""Token classification (NER): a linear head on every token's features; entity-level
precision, recall and F1 as seqeval computes them (CoNLL evaluation), and token accuracy.

Labels are aligned to sub-words: a word's first sub-word carries its tag, the others (and the
special tokens) are ignored, in training and in scoring alike.
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
from tunewise.data.text import TokenSet
from tunewise.errors import BackboneError
from tunewise.features import IGNORE
from tunewise.tasks import TASKS, TaskModel
from tunewise.tasks._text_batches import Encoded, TextTask, encoded_once, text_loader


def align_tags(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """The target of every token: its word's tag on the word's first sub-word, IGNORE elsewhere.

    Example: word_ids [None, 0, 0, 1, None] and tags [3, 0] give [-100, 3, -100, 0, -100].
    """
    targets, previous = [], None
    for word in word_ids:
        targets.append(IGNORE if word is None or word == previous else tags[word])
        previous = word
    return targets


def encode_sentences(data: TokenSet, preprocess: Tokenize) -> Encoded:
    """Tokenize the pre-split words once (truncated to max_length) and align the tags."""
    tokenizer = preprocess.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise BackboneError(f"token classification needs a fast tokenizer (word ids); {preprocess.name!r} has "
                            "none. Use a model with a tokenizer.json.")

    def encode() -> dict[str, list]:
        encoded = tokenizer(data.tokens, is_split_into_words=True, truncation=True, max_length=preprocess.max_length)
        columns = dict(encoded)
        columns["targets"] = [align_tags(encoded.word_ids(i), tags) for i, tags in enumerate(data.tags)]
        return columns

    columns = encoded_once((preprocess.name, preprocess.max_length, data.fingerprint()), encode)
    return Encoded(columns, columns["targets"])


@TASKS.add
class TokenClassification(TextTask):
    name = "token_classification"
    metric = "f1"
    cacheable = True
    path_help = ("a text file (.csv, .tsv, .jsonl, .json, .parquet, CoNLL) or a folder of "
                 "train/validation[/test] files")
    per_token = True
    data_kind = TokenSet
    outputs = "token_scores"
    reads = "sentences of words with one tag each"
    transformers_head = ("AutoModelForTokenClassification", "classifier")
    pipeline = "token-classification"

    def __init__(self, classes: list[str] | tuple[str, ...] = ()) -> None:
        self.classes: list[str] = list(classes)
        """The tag names its metrics read: given when made (evaluate), or set by build_model (fit)."""

    def build_model(self, backbone: Backbone, classes: list[str]) -> TaskModel:
        self.classes = list(classes)  # metrics name the tags
        cast(TextEncoder, backbone.model).use_tokens()  # a text backbone's (check_backbone_fits)
        return TaskModel(backbone.model, nn.Linear(backbone.num_features, len(classes)), backbone.layer_groups)

    def loader(self, data: TokenSet, preprocess: Tokenize, train: TrainConfig, training: bool) -> DataLoader:
        return text_loader(encode_sentences(data, preprocess), preprocess.tokenizer, train, training)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Shape: outputs (B, T, C) logits, targets (B, T) tag indices or IGNORE -> scalar."""
        return F.cross_entropy(outputs.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)

    metrics_names = ("f1", "accuracy", "precision", "recall")

    def metrics(self, outputs: list[torch.Tensor], targets: list[torch.Tensor], data) -> dict:
        """Entity-level precision/recall/F1 (seqeval, CoNLL rules), token accuracy and loss."""
        from seqeval.metrics import f1_score, precision_score, recall_score

        true, predicted, losses, count = self._tags(outputs, targets)
        hits = sum(t == p for ts, ps in zip(true, predicted, strict=True) for t, p in zip(ts, ps, strict=True))
        return {"f1": float(f1_score(true, predicted, zero_division=0)),
                "precision": float(precision_score(true, predicted, zero_division=0)),
                "recall": float(recall_score(true, predicted, zero_division=0)),
                "accuracy": hits / max(1, count), "loss": losses / max(1, count)}

    def example_stats(self, outputs: list[torch.Tensor], targets: list[torch.Tensor], data=None) -> np.ndarray:
        """Per sentence: entities found correctly, predicted, true; tokens right, scored.

        Shape: -> (N, 5) integers; summed over any set of sentences they give seqeval's micro scores.
        """
        from seqeval.metrics.sequence_labeling import get_entities

        true, predicted, _, _ = self._tags(outputs, targets)
        rows = []
        for ts, ps in zip(true, predicted, strict=True):
            gold, found = set(get_entities(ts)), set(get_entities(ps))
            rows.append([len(gold & found), len(found), len(gold), sum(t == p for t, p in zip(ts, ps, strict=True)),
                         len(ts)])
        return np.array(rows, dtype=np.int64).reshape(-1, 5)

    def metric_from_stats(self, stats: np.ndarray, metric: str) -> float:
        correct, found, gold, hits, tokens = stats.sum(0)
        return {"f1": 2 * correct / max(1, found + gold), "precision": correct / max(1, found),
                "recall": correct / max(1, gold), "accuracy": hits / max(1, tokens)}[metric]

    def _tags(self, outputs, targets) -> tuple[list[list[str]], list[list[str]], float, int]:
        """Each sentence's true and predicted tag names on its scored tokens; summed loss and token count."""
        classes = self.classes
        true, predicted, losses, count = [], [], 0.0, 0
        for logits, target in zip(outputs, targets, strict=True):
            logits = logits.float()
            losses += float(F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE,
                                            reduction="sum"))
            count += int((target != IGNORE).sum())
            for row_logits, row_target in zip(logits, target, strict=True):
                keep = row_target != IGNORE
                true.append([classes[i] for i in row_target[keep].tolist()])
                predicted.append([classes[i] for i in row_logits[keep].argmax(-1).tolist()])
        return true, predicted, losses, count
