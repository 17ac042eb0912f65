"""Text data readers: CSV/TSV/JSONL/parquet, split folders, saved HF datasets, CoNLL, SQuAD, and bad inputs.

Every file is tiny and written under tmp_path; nothing is downloaded.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tunewise.config import DataConfig
from tunewise.data.text import QASet, TextSet, TokenSet
from tunewise.data.text_files import read_text_data
from tunewise.errors import DataError
from tunewise.tasks import get_task

TEXT, TOKENS, QA = (get_task(name) for name in ("text_classification", "token_classification", "question_answering"))


def _reviews(n: int = 20) -> pd.DataFrame:
    """`n` reviews alternating between the labels pos and neg, each with a second text."""
    return pd.DataFrame({
        "text": [f"review number {i}" for i in range(n)],
        "hypothesis": [f"claim {i}" for i in range(n)],
        "label": ["pos" if i % 2 else "neg" for i in range(n)],
    })


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _squad(path: Path, qas: list[dict], context: str = "Paris is the capital of France.") -> Path:
    doc = {"version": "v2.0", "data": [{"title": "France", "paragraphs": [{"context": context, "qas": qas}]}]}
    path.write_text(json.dumps(doc))
    return path


# ---- text classification --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_single_file_formats_give_three_splits(tmp_path, suffix):
    path = tmp_path / f"reviews{suffix}"
    frame = _reviews()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    splits = read_text_data(path, DataConfig(val_fraction=0.2, test_fraction=0.2), TEXT)
    assert isinstance(splits.train, TextSet)
    assert splits.classes == ["neg", "pos"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 4, 4)
    assert splits.train.pairs is None
    assert splits.train.source == str(path.resolve())
    everything = splits.train.texts + splits.val.texts + splits.test.texts
    assert sorted(everything) == sorted(frame["text"])
    for part in (splits.train, splits.val, splits.test):
        for text, label in zip(part.texts, part.labels, strict=True):
            number = int(text.split()[-1])
            assert part.classes[label] == ("pos" if number % 2 else "neg")


def test_text_pairs_and_json_list_of_records(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(_reviews().to_dict("records")))
    splits = read_text_data(path, DataConfig(text_pair_column="hypothesis", test_fraction=0), TEXT)
    assert splits.test is None
    for part in (splits.train, splits.val):
        assert [t.split()[-1] for t in part.texts] == [p.split()[-1] for p in part.pairs]


def test_integer_labels_sort_numerically(tmp_path):
    records = [{"text": f"t{i}", "label": i % 3 * 5} for i in range(12)]  # labels 0, 5, 10
    splits = read_text_data(_jsonl(tmp_path / "d.jsonl", records), DataConfig(), TEXT)
    assert splits.classes == ["0", "5", "10"]
    csv = tmp_path / "d.csv"
    pd.DataFrame(records).to_csv(csv, index=False)
    assert read_text_data(csv, DataConfig(), TEXT).classes == ["0", "5", "10"]


def test_stratified_split_is_reproducible_and_keeps_every_class_in_train(tmp_path):
    labels = ["a"] * 30 + ["b"] * 6 + ["c"] * 2
    path = tmp_path / "skewed.csv"
    pd.DataFrame({"text": [f"x{i}" for i in range(len(labels))], "label": labels}).to_csv(path, index=False)
    config = DataConfig(val_fraction=0.3, test_fraction=0.3, seed=7)
    first, again = read_text_data(path, config, TEXT), read_text_data(path, config, TEXT)
    assert first.train.texts == again.train.texts and first.val.texts == again.val.texts
    assert set(first.train.labels) == {0, 1, 2}
    other = read_text_data(path, DataConfig(val_fraction=0.3, test_fraction=0.3, seed=8), TEXT)
    assert other.train.texts != first.train.texts
    counts = Counter(first.val.labels)
    assert counts[0] == 9 and counts[1] == 2


def test_split_folder_is_used_as_given(tmp_path):
    frame = _reviews(12)
    frame[:8].to_csv(tmp_path / "train.csv", index=False)
    frame[8:10].to_csv(tmp_path / "validation.csv", index=False)
    frame[10:].to_csv(tmp_path / "test.csv", index=False)
    splits = read_text_data(tmp_path, DataConfig(), TEXT)
    assert splits.train.texts == list(frame["text"][:8])
    assert splits.val.texts == list(frame["text"][8:10])
    assert splits.test.texts == list(frame["text"][10:])
    assert splits.val.source == str((tmp_path / "validation.csv").resolve())


def test_split_folder_without_val_splits_train(tmp_path):
    _reviews(20).to_csv(tmp_path / "train.csv", index=False)
    splits = read_text_data(tmp_path, DataConfig(val_fraction=0.2), TEXT)
    assert (len(splits.train), len(splits.val), splits.test) == (16, 4, None)


def test_saved_dataset_dict_uses_class_label_names(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "neutral", "positive"])})
    part = {"text": ["bad", "fine", "good", "awful"], "label": [0, 1, 2, 0]}
    saved = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(part, features=features),
        "validation": datasets.Dataset.from_dict({"text": ["ok"], "label": [1]}, features=features),
    })
    saved.save_to_disk(str(tmp_path / "hf"))
    splits = read_text_data(tmp_path / "hf", DataConfig(), TEXT)
    assert splits.classes == ["negative", "neutral", "positive"]
    assert splits.train.labels == [0, 1, 2, 0] and splits.val.labels == [1]
    assert splits.val.source == f"{(tmp_path / 'hf').resolve()}#validation"
    assert splits.test is None


def test_saved_single_dataset_is_split_like_a_file(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_pandas(_reviews(20)).save_to_disk(str(tmp_path / "one"))
    splits = read_text_data(tmp_path / "one", DataConfig(text_pair_column="hypothesis"), TEXT)
    assert splits.classes == ["neg", "pos"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 20
    assert splits.train.pairs is not None


# ---- token classification -------------------------------------------------------------------------------

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER


BRUSSELS NNP B-NP B-LOC
"""


def test_conll_skips_docstart_and_blank_lines(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(CONLL)
    splits = read_text_data(path, DataConfig(val_fraction=0.34, test_fraction=0), TOKENS)
    assert isinstance(splits.train, TokenSet)
    assert splits.classes == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    sentences = {tuple(words): [splits.classes[t] for t in tags]
                 for part in (splits.train, splits.val) for words, tags in zip(part.tokens, part.tags, strict=True)}
    assert sentences == {
        ("EU", "rejects", "German", "call"): ["B-ORG", "O", "B-MISC", "O"],
        ("Peter", "Blackburn"): ["B-PER", "I-PER"],
        ("BRUSSELS",): ["B-LOC"],
    }


def test_jsonl_tokens_and_tags(tmp_path):
    train = [{"tokens": ["Ann", "runs"], "tags": ["B-PER", "O"]}, {"tokens": ["in", "Rome"], "tags": ["O", "B-LOC"]}]
    _jsonl(tmp_path / "train.jsonl", train)
    _jsonl(tmp_path / "dev.jsonl", [{"tokens": ["Bob"], "tags": ["B-PER"]}])
    splits = read_text_data(tmp_path, DataConfig(), TOKENS)
    assert splits.classes == ["O", "B-LOC", "B-PER"]
    assert splits.train.tags == [[2, 0], [0, 1]] and splits.val.tags == [[2]]


def test_saved_dataset_tags_use_sequence_class_label(tmp_path):
    datasets = pytest.importorskip("datasets")
    names = ["O", "B-PER", "I-PER"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    rows = {"tokens": [["Ann", "Lee", "ran"]] * 10, "tags": [[1, 2, 0]] * 10}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ner"))
    splits = read_text_data(tmp_path / "ner", DataConfig(), TOKENS)
    assert splits.classes == names and splits.train.tags[0] == [1, 2, 0]


# ---- question answering ---------------------------------------------------------------------------------

CONTEXT = "Paris is the capital of France."


def test_squad_v1_json(tmp_path):
    qas = [{"id": f"q{i}", "question": "What is the capital?", "answers": [{"text": "Paris", "answer_start": 0}]}
           for i in range(10)]
    splits = read_text_data(_squad(tmp_path / "squad.json", qas), DataConfig(), QA)
    assert isinstance(splits.train, QASet) and not splits.train.has_unanswerable
    examples = splits.train.examples + splits.val.examples + splits.test.examples
    assert sorted(e.id for e in examples) == sorted(f"q{i}" for i in range(10))
    assert examples[0].answers == ({"text": "Paris", "answer_start": 0},)
    assert examples[0].context == CONTEXT


def test_squad_v2_unanswerable_questions(tmp_path):
    qas = [{"id": "a", "question": "Capital of?", "answers": [{"text": "France", "answer_start": 24}],
            "is_impossible": False},
           {"id": "b", "question": "Capital of Spain?", "answers": [], "is_impossible": True,
            "plausible_answers": [{"text": "Paris", "answer_start": 0}]}]
    _squad(tmp_path / "train.json", qas)
    _squad(tmp_path / "val.json", qas[1:])
    splits = read_text_data(tmp_path, DataConfig(), QA)
    assert [e.answers for e in splits.train.examples] == [({"text": "France", "answer_start": 24},), ()]
    assert splits.val.has_unanswerable


def test_hf_layout_jsonl(tmp_path):
    records = [{"id": str(i), "question": "Which city?", "context": CONTEXT,
                "answers": {"text": ["Paris"], "answer_start": [0]}} for i in range(10)]
    records.append({"id": "none", "question": "Which river?", "context": CONTEXT,
                    "answers": {"text": [], "answer_start": []}})
    splits = read_text_data(_jsonl(tmp_path / "qa.jsonl", records), DataConfig(test_fraction=0), QA)
    examples = {e.id: e for e in splits.train.examples + splits.val.examples}
    assert examples["3"].answers == ({"text": "Paris", "answer_start": 0},)
    assert examples["none"].answers == ()
    assert splits.test is None


# ---- bad inputs -----------------------------------------------------------------------------------------


def test_missing_column_lists_the_columns(tmp_path):
    path = tmp_path / "reviews.csv"
    _reviews().to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column 'txt' not in .*reviews.csv'; it has: text, hypothesis, label\. "
                                        r"Pass --text-column NAME"):
        read_text_data(path, DataConfig(text_column="txt"), TEXT)


def test_empty_text_names_the_line(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\ngood,pos\n,neg\nbad,neg\n")
    with pytest.raises(DataError, match=r"line 3 of .*reviews.csv' has no text"):
        read_text_data(path, DataConfig(), TEXT)


def test_val_label_unseen_in_train(tmp_path):
    _reviews(8).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"text": ["meh"], "label": ["neutral"]}).to_csv(tmp_path / "val.csv", index=False)
    with pytest.raises(DataError, match=r"label 'neutral' in line 2 of .*val.csv' is not among the training labels"):
        read_text_data(tmp_path, DataConfig(), TEXT)


def test_single_class_is_rejected(tmp_path):
    path = _jsonl(tmp_path / "one.jsonl", [{"text": f"t{i}", "label": "pos"} for i in range(5)])
    with pytest.raises(DataError, match=r"1 classes \(pos\).*at least 2"):
        read_text_data(path, DataConfig(), TEXT)


def test_conll_one_column_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("EU B-ORG\nrejects\n")
    with pytest.raises(DataError, match=r"line 2 of .*bad.conll' has one column \('rejects'\)"):
        read_text_data(path, DataConfig(), TOKENS)


def test_token_tag_length_mismatch(tmp_path):
    records = [{"tokens": ["a", "b"], "tags": ["O", "O"]}, {"tokens": ["a", "b"], "tags": ["O"]}]
    with pytest.raises(DataError, match=r"line 2 of .*ner.jsonl' has 2 tokens but 1 tags"):
        read_text_data(_jsonl(tmp_path / "ner.jsonl", records), DataConfig(), TOKENS)


def test_answer_start_must_match_its_text(tmp_path):
    qas = [{"id": "q7", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 3}]}]
    with pytest.raises(DataError, match=r"question 'q7' .*'Paris' is not at answer_start 3"):
        read_text_data(_squad(tmp_path / "squad.json", qas), DataConfig(), QA)


@pytest.mark.parametrize("name", ["data.xlsx", "missing.csv", "empty.csv"])
def test_unusable_paths_list_the_formats(tmp_path, name):
    path = tmp_path / name
    if name != "missing.csv":
        path.write_text("")
    with pytest.raises(DataError, match=r"For text_classification pass a \.csv, \.tsv, \.jsonl"):
        read_text_data(path, DataConfig(), TEXT)


def test_a_task_that_reads_no_text_is_refused(tmp_path):
    with pytest.raises(DataError, match="task 'image_classification' has no text reader"):
        read_text_data(tmp_path, DataConfig(), get_task("image_classification"))
