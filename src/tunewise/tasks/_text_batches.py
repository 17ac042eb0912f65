"""Batches of tokenized text for every text task: tokenized once, padded per batch, grouped by length.

Dynamic padding pads a batch only to its own longest input; length-grouped shuffling (the
sampler of transformers' Trainer `group_by_length`) puts inputs of similar length together,
so little of each batch is padding.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from tunewise.config import DataConfig, TrainConfig
from tunewise.data.base import DataSplits
from tunewise.features import IGNORE
from tunewise.tasks import Task

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")  # labels: a generator scores them
_ENCODED: OrderedDict = OrderedDict()  # a few recent encodings: a search re-encodes nothing


def encoded_once(key: tuple, encode: Callable[[], dict[str, list]]) -> dict[str, list]:
    """`encode()`, remembered in this process under `key` (tokenizer, length, data fingerprint)."""
    if key not in _ENCODED:
        _ENCODED[key] = encode()
        while len(_ENCODED) > 8:
            _ENCODED.popitem(last=False)
    return _ENCODED[key]


class TextTask(Task):
    """What the text tasks share: a tokenizer's model reads them, and their local data are text files
    (data/text_files.py builds the task's `data_kind`)."""

    modality: ClassVar[str] = "text"

    def read_path(self, path: Path, config: DataConfig) -> DataSplits:
        from tunewise.data.text_files import read_text_data

        return read_text_data(path, config, self)


class Encoded(Dataset):
    """Tokenized examples: item i is ({input name: ids}, target), the target an int, a list of
    per-token ints, or a tuple (QA start and end)."""

    def __init__(self, columns: dict[str, list], targets: list, **extra) -> None:
        self.inputs = {k: columns[k] for k in MODEL_INPUTS if k in columns}
        self.targets = targets
        self.extra = extra
        """What metrics need beyond the batches (QA: the windows' offsets and the examples)."""

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return {k: v[i] for k, v in self.inputs.items()}, self.targets[i]

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.inputs["input_ids"]]


def collate(pad_id: int) -> Callable:
    """Pad a batch to its longest input: ids with the tokenizer's pad id, masks and types with 0,
    labels and per-token targets with IGNORE."""

    def pad(items: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        inputs, targets = zip(*items, strict=True)
        batch = {key: pad_sequence([torch.tensor(x[key]) for x in inputs], batch_first=True,
                                   padding_value={"input_ids": pad_id, "labels": IGNORE}.get(key, 0))
                 for key in inputs[0]}
        if isinstance(targets[0], list):
            target = pad_sequence([torch.tensor(t) for t in targets], batch_first=True, padding_value=IGNORE)
        else:
            target = torch.tensor(targets)
        return batch, target

    return pad


def text_loader(data: Encoded, tokenizer, train: TrainConfig, training: bool) -> DataLoader:
    """Length-grouped shuffled batches when training, in order otherwise; padded per batch."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    sampler = LengthGroupedSampler(train.batch_size, lengths=data.lengths()) if training else None
    # Tokenized already and padded cheaply: worker processes would cost more than they save.
    return DataLoader(data, batch_size=train.batch_size, sampler=sampler, collate_fn=collate(tokenizer.pad_token_id))
