"""Extractive question answering (SQuAD v1/v2): windowed encoding, span decoding, official EM/F1.

The logic follows Hugging Face's examples/pytorch/question-answering (run_qa.py, utils_qa.py) and
the official SQuAD v2.0 evaluation script.
"""

from __future__ import annotations

import collections
import re
import string

import numpy as np

from tunewise.data.text import QAExample
from tunewise.spans import best_span

CLS_INDEX = 0
"""Where a window's [CLS] (or <s>) sits: the target of an answer outside the window, and the null score."""
PUNCTUATION = frozenset(string.punctuation)


def encode_windows(tokenizer, examples: list[QAExample], max_length: int, doc_stride: int,
                   train: bool) -> dict[str, list]:
    """Tokenize question/context pairs into overlapping windows over the context.

    Args:
        tokenizer: a fast Hugging Face tokenizer (offsets are needed).
        examples: the questions to encode.
        max_length: tokens per window, question and special tokens included.
        doc_stride: tokens of context shared by consecutive windows.
        train: True gives start/end targets; False gives context-only offsets for decoding.

    Returns:
        Unpadded lists per window: input_ids, attention_mask, token_type_ids (when the tokenizer
        gives them), example_index; plus start_positions/end_positions (train) or offset_mapping
        (eval; None at tokens outside the context).

    Shape: every list has one entry per window; input_ids[i], attention_mask[i], token_type_ids[i]
        and offset_mapping[i] have the length of window i.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("encode_windows needs a fast tokenizer (offset mapping)")
    # A left-padding tokenizer (e.g. XLNet) puts the context first, so the question is never cut.
    context_first = tokenizer.padding_side == "left"
    # Leading whitespace in some questions only wastes window tokens.
    questions = [e.question.lstrip() for e in examples]
    contexts = [e.context for e in examples]
    encoded = tokenizer(
        contexts if context_first else questions,
        questions if context_first else contexts,
        truncation="only_first" if context_first else "only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    context_id = 0 if context_first else 1
    windows = {key: list(encoded[key]) for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded}
    windows["example_index"] = list(encoded["overflow_to_sample_mapping"])
    sequence_ids = [encoded.sequence_ids(i) for i in range(len(windows["input_ids"]))]
    offsets = encoded["offset_mapping"]
    if train:
        spans = [_answer_tokens(examples[e], offsets[i], sequence_ids[i], context_id)
                 for i, e in enumerate(windows["example_index"])]
        windows["start_positions"] = [start for start, _ in spans]
        windows["end_positions"] = [end for _, end in spans]
    else:
        windows["offset_mapping"] = [
            [tuple(o) if s == context_id else None for o, s in zip(offsets[i], sequence_ids[i], strict=True)]
            for i in range(len(offsets))
        ]
    return windows


def _answer_tokens(example: QAExample, offsets, sequence_ids: list, context_id: int) -> tuple[int, int]:
    """Token indices of the first answer in one window, or (CLS, CLS) when it is not wholly inside."""
    if not example.answers:
        return CLS_INDEX, CLS_INDEX
    answer = example.answers[0]
    start_char = answer["answer_start"]
    end_char = start_char + len(answer["text"])
    first = sequence_ids.index(context_id)
    last = len(sequence_ids) - 1 - sequence_ids[::-1].index(context_id)
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return CLS_INDEX, CLS_INDEX
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def best_answers(start_logits, end_logits, windows: dict[str, list], examples: list[QAExample],
                 max_answer_length: int = 30, n_best: int = 20, allow_no_answer: bool = False,
                 null_threshold: float = 0.0) -> dict[str, str]:
    """Pick each example's answer text from the logits of all its windows.

    Args:
        start_logits: per window, the start logit of each token (arrays or tensors).
        end_logits: per window, the end logit of each token.
        windows: what encode_windows(train=False) returned for `examples`.
        examples: the examples the windows came from.
        max_answer_length: the longest span, in tokens.
        n_best: how many top starts and top ends per window are paired.
        allow_no_answer: SQuAD v2: answer "" when the null (CLS) score beats every span.
        null_threshold: the margin the null score must exceed the best span score by.

    Returns:
        Answer text per example id; "" when no answer (or no valid span).

    Shape: start_logits[i] and end_logits[i] (L_i,), L_i = len(windows["input_ids"][i]); longer
        (padded) arrays are cut to L_i.
    """
    best: dict[int, tuple[float, int, int]] = {}  # example index -> (score, start char, end char)
    null: dict[int, float] = {}  # example index -> minimal null score over its windows
    for i, example_index in enumerate(windows["example_index"]):
        offsets = windows["offset_mapping"][i]
        start, end = _as_array(start_logits[i])[: len(offsets)], _as_array(end_logits[i])[: len(offsets)]
        null_score = float(start[CLS_INDEX] + end[CLS_INDEX])
        null[example_index] = min(null.get(example_index, null_score), null_score)
        span = best_span(start, end, offsets, max_answer_length, n_best)
        if span is not None and (example_index not in best or span[0] > best[example_index][0]):
            best[example_index] = span
    answers = {}
    for index, example in enumerate(examples):
        span = best.get(index)
        if span is None or (allow_no_answer and index in null and null[index] > span[0] + null_threshold):
            answers[example.id] = ""
        else:
            answers[example.id] = example.context[span[1]:span[2]]
    return answers


def _as_array(logits) -> np.ndarray:
    """A 1-D float array from a tensor (any device or dtype) or array-like."""
    if hasattr(logits, "detach"):
        logits = logits.detach().float().cpu().numpy()
    return np.asarray(logits, dtype=np.float64).reshape(-1)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (official SQuAD)."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text, flags=re.UNICODE)
    return " ".join(text.split())


def _golds(golds: list[str]) -> list[str]:
    # As the official script: gold texts that normalize to nothing are dropped; none left means unanswerable.
    return [g for g in golds if normalize_answer(g)] or [""]


def exact_match(prediction: str, golds: list[str]) -> float:
    """1.0 when the normalized prediction equals any normalized gold answer, else 0.0.

    Args:
        prediction: the predicted text ("" for no answer).
        golds: the gold texts; [""] (or []) for an unanswerable question.

    Returns:
        The best exact match over the gold answers.
    """
    return max(float(normalize_answer(g) == normalize_answer(prediction)) for g in _golds(golds))


def f1(prediction: str, golds: list[str]) -> float:
    """The best token-overlap F1 of the prediction against any gold answer (official SQuAD).

    Args:
        prediction: the predicted text ("" for no answer).
        golds: the gold texts; [""] (or []) for an unanswerable question.

    Returns:
        The maximal F1 over gold answers; against an unanswerable gold, 1.0 only for an empty prediction.
    """
    return max(_f1_one(prediction, g) for g in _golds(golds))


def _f1_one(prediction: str, gold: str) -> float:
    predicted, true = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not true:
        # A no-answer on either side scores 1 only when both are no-answer.
        return float(predicted == true)
    same = sum((collections.Counter(predicted) & collections.Counter(true)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(true)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: dict[str, str], examples: list[QAExample]) -> dict:
    """Exact match and F1 as fractions in [0, 1], averaged over examples (official SQuAD v2).

    Args:
        predictions: answer text per example id; a missing id counts as "" (no answer).
        examples: the gold examples.

    Returns:
        {"exact_match", "f1"}; when any example is unanswerable also "has_answer_f1" and/or
        "no_answer_f1" for whichever of the two groups is non-empty.
    """
    exact, overlap = [], []
    for example in examples:
        prediction = predictions.get(example.id, "")
        golds = [a["text"] for a in example.answers]
        exact.append(exact_match(prediction, golds))
        overlap.append(f1(prediction, golds))
    metrics = {"exact_match": _mean(exact), "f1": _mean(overlap)}
    if any(not e.answers for e in examples):
        for name, has_answer in (("has_answer_f1", True), ("no_answer_f1", False)):
            group = [score for score, e in zip(overlap, examples, strict=True) if bool(e.answers) == has_answer]
            if group:
                metrics[name] = _mean(group)
    return metrics


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0
