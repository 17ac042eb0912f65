"""Text data as plain lists: labelled texts (or pairs), tagged token sequences, SQuAD-style QA,
prompts with completions.

Each set has the surface DataSplits needs: `len`, `subset`, `fingerprint`, `classes`, `source`
(and `labels` where there is one label per example, which stratified splits use).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace


def _digest(source: str, payload) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(f"{source}|{text}".encode()).hexdigest()[:16]


@dataclass
class TextSet:
    """Texts (or text pairs) with one class each: sentiment, topic, entailment.

    Args:
        texts: the first (or only) text of each example.
        pairs: the second text of each example, for pair tasks; None for single texts.
        labels: class indices into `classes`.
    """

    texts: list[str]
    labels: list[int]
    classes: list[str]
    source: str
    pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> TextSet:
        return replace(self, texts=[self.texts[i] for i in indices], labels=[self.labels[i] for i in indices],
                       pairs=None if self.pairs is None else [self.pairs[i] for i in indices])

    def fingerprint(self) -> str:
        return _digest(self.source, [self.texts, self.pairs, self.labels])


@dataclass
class TokenSet:
    """Pre-split words with one tag each (NER in IOB2 or IOBES), e.g. from CoNLL-2003 files.

    Args:
        tokens: the words of each sentence.
        tags: tag indices into `classes`, one per word.
        classes: the tag names (`O`, `B-PER`, `I-PER`, ...).
    """

    tokens: list[list[str]]
    tags: list[list[int]]
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, indices: Sequence[int]) -> TokenSet:
        return replace(self, tokens=[self.tokens[i] for i in indices], tags=[self.tags[i] for i in indices])

    def fingerprint(self) -> str:
        return _digest(self.source, [self.tokens, self.tags, self.classes])


@dataclass(frozen=True)
class QAExample:
    """One SQuAD question: `answers` are {"text", "answer_start"} dicts (character offsets into
    `context`); an empty list means unanswerable (SQuAD v2)."""

    id: str
    question: str
    context: str
    answers: tuple[dict, ...] = field(default_factory=tuple)


@dataclass
class QASet:
    """Extractive question answering examples (SQuAD v1 or v2)."""

    examples: list[QAExample]
    source: str
    classes: list[str] = field(default_factory=lambda: ["start", "end"])

    def __len__(self) -> int:
        return len(self.examples)

    def subset(self, indices: Sequence[int]) -> QASet:
        return replace(self, examples=[self.examples[i] for i in indices])

    def fingerprint(self) -> str:
        return _digest(self.source, [[e.id, e.question, e.context, list(e.answers)] for e in self.examples])

    @property
    def has_unanswerable(self) -> bool:
        return any(not e.answers for e in self.examples)


@dataclass
class PromptSet:
    """Prompts with the completions a generator should learn to write (supervised fine-tuning).

    Args:
        prompts: each example's prompt: a text, or chat messages ({"role", "content"} dicts) before
            the reply, which the tokenizer's chat template turns into text. "" for plain text, where
            every token is learned.
        completions: the reply to learn after each prompt.
        strict: refuse examples longer than the model's max length instead of cutting them.
    """

    prompts: list[str | list[dict]]
    completions: list[str]
    source: str
    classes: list[str] = field(default_factory=list)
    strict: bool = False

    def __len__(self) -> int:
        return len(self.completions)

    def subset(self, indices: Sequence[int]) -> PromptSet:
        return replace(self, prompts=[self.prompts[i] for i in indices],
                       completions=[self.completions[i] for i in indices])

    def fingerprint(self) -> str:
        return _digest(self.source, [self.prompts, self.completions])

    @property
    def chat(self) -> bool:
        return any(isinstance(p, list) for p in self.prompts)
