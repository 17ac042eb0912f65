"""Text tasks end to end on a tiny BERT built from a config (and real MiniLM weights where it
matters): fit, cached features, export that transformers' pipeline loads, evaluate, search."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import write_reviews

from tunewise import DataConfig, TrainConfig, evaluate, fit, predict, search
from tunewise.errors import TunewiseError


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def conll(tmp_path_factory):
    from conftest import write_conll

    return DataConfig(data=str(write_conll(tmp_path_factory.mktemp("ner") / "train.conll")), max_length=16)


@pytest.fixture(scope="module")
def squad(tmp_path_factory):
    context = "acme corp was founded in oslo by maria lopez . john smith founded the film in paris ."
    qas = [{"id": f"q{i}-{k}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
           for i in range(6) for k, (q, a) in enumerate([("who founded acme corp ?", "maria lopez"),
                                                          ("where was acme corp founded ?", "oslo"),
                                                          ("who founded the film ?", "john smith")])]
    path = tmp_path_factory.mktemp("qa") / "squad.json"
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}))
    return DataConfig(data=str(path), max_length=24, doc_stride=8)


def test_text_classification_exports_a_model_that_transformers_pipeline_loads(tiny_bert, reviews, tmp_path):
    from transformers import pipeline

    record = fit(f"hf:{tiny_bert}", reviews, "full", task="text_classification", out=tmp_path / "run", epochs=2,
                 batch_size=8, lr=1e-3, num_workers=0)
    assert record.metric == "accuracy" and not record.cached_features
    assert evaluate(tmp_path / "run", reviews, split="val")["accuracy"] == pytest.approx(record.val["accuracy"])

    rows = predict(tmp_path / "run", ["a good movie", "the film was dull"])
    theirs = pipeline("text-classification", model=str(tmp_path / "run"), top_k=None)(["a good movie"])[0]
    assert {s["label"] for s in theirs} == {"neg", "pos"}
    assert {s["label"]: s["score"] for s in theirs}[rows[0]["label"]] == pytest.approx(rows[0]["probability"])
    cli = subprocess.run([sys.executable, "-m", "tunewise", "predict", str(tmp_path / "run"), "a good movie"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "a good movie" in cli.stdout and rows[0]["label"] in cli.stdout


def test_text_linear_probe_trains_on_pooled_features_computed_once(tiny_bert, reviews, tmp_path):
    cache = tmp_path / "cache"
    first = fit(f"hf:{tiny_bert}", reviews, "linear_probe", task="text_classification", out=tmp_path / "a",
                epochs=3, batch_size=8, num_workers=0, cache_dir=str(cache))
    files = sorted(cache.iterdir())
    second = fit(f"hf:{tiny_bert}", reviews, "linear_probe", task="text_classification", out=tmp_path / "b",
                 epochs=3, batch_size=8, num_workers=0, cache_dir=str(cache))
    assert first.cached_features and sorted(cache.iterdir()) == files  # the second run read the cache
    assert second.val == first.val


def test_ner_on_cached_token_features_matches_the_exported_model(tiny_bert, conll, tmp_path):
    from transformers import pipeline

    record = fit(f"hf:{tiny_bert}", conll, "linear_probe", task="token_classification", out=tmp_path / "run",
                 epochs=3, batch_size=8, lr=1e-2, num_workers=0)
    assert record.cached_features and record.metric == "f1"
    assert {"f1", "precision", "recall", "accuracy"} <= set(record.val)
    # the head trained on cached token features scores the same through the live, exported model
    assert evaluate(tmp_path / "run", conll, split="val")["f1"] == pytest.approx(record.val["f1"])
    entities = pipeline("token-classification", model=str(tmp_path / "run"))("maria lopez was in oslo")
    assert all(e["entity"] in record.classes for e in entities)


def test_question_answering_fits_decodes_and_exports(tiny_bert, squad, tmp_path):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from tunewise.export import load_model

    record = fit(f"hf:{tiny_bert}", squad, "full", task="question_answering", out=tmp_path / "run", epochs=2,
                 batch_size=8, lr=1e-3, num_workers=0)
    assert record.metric == "f1" and {"exact_match", "f1"} <= set(record.val)
    assert evaluate(tmp_path / "run", squad, split="val")["f1"] == pytest.approx(record.val["f1"])
    # transformers 5 has no QA pipeline: its own QA class loads the export and gives our logits
    exported = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "run").eval()
    ours, _ = load_model(tmp_path / "run")
    inputs = dict(AutoTokenizer.from_pretrained(tmp_path / "run")("who founded acme corp ?", "maria lopez",
                                                                   return_tensors="pt"))
    with torch.no_grad():
        out = exported(**inputs)
        assert torch.allclose(ours(inputs), torch.stack([out.start_logits, out.end_logits], -1), atol=1e-5)
    context = "acme corp was founded in oslo by maria lopez ."
    [row] = predict(tmp_path / "run", [f"who founded acme corp ? ||| {context}"])
    assert row["answer"] in context


def test_minilm_features_find_entities_in_unseen_names(tmp_path):
    """Real pretrained weights: a linear probe on MiniLM's token features tags held-out names."""
    data = DataConfig(data="ner_demo", max_train_per_class=300, max_length=48)
    record = fit("pkg:minilm", data, "linear_probe", task="token_classification", out=tmp_path / "run",
                 epochs=3, lr=1e-2, num_workers=0)
    assert record.val["f1"] > 0.3  # a random encoder's features stay near 0 here


def test_a_text_search_selects_on_the_task_metric_and_exports_the_winner(tiny_bert, conll, tmp_path):
    board = search(f"hf:{tiny_bert}", conll, task="token_classification", strategies="linear_probe,bitfit",
                   epochs=2, rates=1, seeds=1, scratch=False, out=tmp_path / "search",
                   train=TrainConfig(batch_size=8, num_workers=0))
    assert board.metric == "f1"
    assert (tmp_path / "search" / "model" / "config.json").is_file()
    assert "task: token_classification" in (tmp_path / "search" / "best.yaml").read_text()
    assert np.isfinite(board.arms[0].mean)


@pytest.mark.parametrize("model,task,data", [
    ("pkg:efficientnet_lite0", "text_classification", "rotten_tomatoes"),
    ("pkg:minilm", "image_classification", "textile"),
])
def test_a_model_of_the_wrong_kind_for_the_task_is_refused(model, task, data, tmp_path):
    with pytest.raises(TunewiseError, match=f"--task {task} needs"):
        fit(model, data, "linear_probe", task=task, out=tmp_path / "run")


def test_data_of_another_task_is_refused(tmp_path):
    with pytest.raises(TunewiseError, match="Pass --task token_classification"):
        fit("pkg:minilm", "ner_demo", "linear_probe", task="text_classification", out=tmp_path / "run")


def test_a_length_above_the_model_limit_is_refused(tiny_bert, reviews, tmp_path):
    too_long = DataConfig(**{**reviews.__dict__, "max_length": 1000})
    with pytest.raises(TunewiseError, match=r"--max-length 1000 is more than this model allows \(128 tokens"):
        fit(f"hf:{tiny_bert}", too_long, "linear_probe", task="text_classification", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_entity_f1_matches_a_hand_count():
    """Gold: PER (0-1), LOC (3); predicted: PER (0-1) right, LOC missed, a false ORG (4).
    Entities: 2 gold, 2 predicted, 1 right: precision 1/2, recall 1/2, F1 1/2."""
    from tunewise.tasks.token_classification import TokenClassification

    classes = ["O", "B-PER", "I-PER", "B-LOC", "B-ORG"]
    task = TokenClassification()
    task.classes = classes
    gold = torch.tensor([[1, 2, 0, 3, 0, -100]])
    predicted = torch.tensor([1, 2, 0, 0, 4, 0])
    logits = torch.nn.functional.one_hot(predicted, len(classes)).float().unsqueeze(0)
    metrics = task.metrics([logits], [gold], None)
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == (0.5, 0.5, 0.5)
    assert metrics["accuracy"] == pytest.approx(3 / 5)  # the ignored position is not counted


@pytest.mark.parametrize("task", ["text_classification", "token_classification"])
def test_text_models_rank_on_pooled_or_token_features(tiny_bert, reviews, conll, task, tmp_path):
    from tunewise import rank
    from tunewise.data import load_data

    data = reviews if task == "text_classification" else conll
    ranking = rank([f"hf:{tiny_bert}", f"random:hf:{tiny_bert}"], data, task=task, out=tmp_path / "rank")
    assert [c.error for c in ranking.candidates] == [None, None]
    assert all(np.isfinite(c.scores["logme"]) and np.isfinite(c.combined) for c in ranking.candidates)
    train = load_data(data, task).train
    # one row per text, or one per word (its first sub-word) for NER
    expected = len(train) if task == "text_classification" else sum(len(words) for words in train.tokens)
    assert ranking.examples == expected
