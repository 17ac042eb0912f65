"""Text classification (sentiment, topic, pairs such as entailment): a linear head on the
encoder's pooled output, as transformers' BERT sequence classifier has (a generator's: its last token's);
accuracy, macro-F1."""

from __future__ import annotations

from torch import nn
from torch.utils.data import DataLoader

from tunewise.backbones import Backbone
from tunewise.backbones.hf import TextDecoder, Tokenize
from tunewise.config import TrainConfig
from tunewise.data.text import TextSet
from tunewise.tasks import TASKS, TaskModel
from tunewise.tasks._text_batches import Encoded, TextTask, encoded_once, text_loader
from tunewise.tasks.image_classification import Classification


def encode_texts(data: TextSet, preprocess: Tokenize) -> Encoded:
    """Tokenize every text (pair) once, truncated to `preprocess.max_length`."""

    def encode() -> dict[str, list]:
        return dict(preprocess.tokenizer(data.texts, data.pairs, truncation=True, max_length=preprocess.max_length))

    columns = encoded_once((preprocess.name, preprocess.max_length, data.fingerprint()), encode)
    return Encoded(columns, list(data.labels))


@TASKS.add
class TextClassification(TextTask, Classification):
    name = "text_classification"
    path_help = "a text file (.csv, .tsv, .jsonl, .json, .parquet) or a folder of train/validation[/test] files"
    data_kind = TextSet
    reads = "texts (or text pairs) with one class each"
    transformers_head = ("AutoModelForSequenceClassification", "classifier")
    pipeline = "text-classification"

    def build_model(self, backbone: Backbone, classes: list[str]) -> TaskModel:
        """A linear head on the pooled features; on a generator's last token, without a bias, as
        transformers' classifiers of generators (LlamaForSequenceClassification's `score`) have it."""
        bias = not isinstance(backbone.model, TextDecoder)
        return TaskModel(backbone.model, nn.Linear(backbone.num_features, len(classes), bias=bias),
                         backbone.layer_groups)

    def loader(self, data: TextSet, preprocess: Tokenize, train: TrainConfig, training: bool) -> DataLoader:
        return text_loader(encode_texts(data, preprocess), preprocess.tokenizer, train, training)
