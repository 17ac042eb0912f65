"""Text classification (sentiment, topic, pairs such as entailment): a linear head on the
encoder's pooled output, as transformers' BERT sequence classifier has; accuracy, macro-F1."""

from __future__ import annotations

from torch.utils.data import DataLoader

from tunewise.backbones.hf import Tokenize
from tunewise.config import TrainConfig
from tunewise.data.text import TextSet
from tunewise.tasks import TASKS
from tunewise.tasks.image_classification import Classification
from tunewise.tasks.text_batches import Encoded, encoded_once, text_loader


def encode_texts(data: TextSet, preprocess: Tokenize) -> Encoded:
    """Tokenize every text (pair) once, truncated to `preprocess.max_length`."""

    def encode() -> dict[str, list]:
        return dict(preprocess.tokenizer(data.texts, data.pairs, truncation=True, max_length=preprocess.max_length))

    columns = encoded_once((preprocess.name, preprocess.max_length, data.fingerprint()), encode)
    return Encoded(columns, list(data.labels))


@TASKS.register("text_classification")
class TextClassification(Classification):
    name = "text_classification"

    def loader(self, data: TextSet, preprocess: Tokenize, train: TrainConfig, training: bool) -> DataLoader:
        return text_loader(encode_texts(data, preprocess), preprocess.tokenizer, train, training)
