"""The serving pieces in-process: dynamic batching, the app's request checks (on stand-in predictors, no
model), the serving path importing no torch, and TorchPredictor giving `tunewise predict`'s rows for
every task (text models fitted on a tiny BERT; dense models exported untrained, which predict as well)."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_png_declaring
from PIL import Image

from tunewise.errors import TunewiseError
from tunewise.ship.batching import Batcher
from tunewise.ship.predictor import BadInput, describe, inputs_from_json, load_predictor, read_images

# --- batching -------------------------------------------------------------------------------------


class Recorder:
    """A model that doubles numbers, remembers its batches, and refuses negative ones."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, inputs: list[int]) -> list[dict[str, Any]]:
        self.batches.append(list(inputs))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if any(x < 0 for x in inputs):
            raise ValueError("negative")
        return [{"double": 2 * x} for x in inputs]


def test_queued_inputs_are_answered_in_order_in_batches_of_at_most_max_batch():
    model = Recorder(delay=0.05)
    batcher = Batcher(model, max_batch=4, window_ms=50)
    futures = batcher.submit(list(range(10)))
    assert [f.result(timeout=10)["double"] for f in futures] == [2 * x for x in range(10)]
    batcher.close()
    assert [len(b) for b in model.batches] == [4, 4, 2] and batcher.largest == 4 and batcher.inputs == 10
    assert model.threads == {"tunewise-batcher"}  # the model runs on one thread only


def test_inputs_from_many_threads_share_a_model_call():
    model = Recorder(delay=0.02)
    batcher = Batcher(model, max_batch=32, window_ms=20)
    answers: list[Any] = [None] * 16

    def ask(i: int) -> None:
        answers[i] = batcher.submit([i])[0].result(timeout=10)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert answers == [{"double": 2 * i} for i in range(16)]
    assert len(model.batches) < 16


def test_a_lone_input_waits_no_longer_than_the_window():
    batcher = Batcher(Recorder(), max_batch=32, window_ms=5)
    start = time.monotonic()
    batcher.submit([1])[0].result(timeout=10)
    assert time.monotonic() - start < 1.0  # 5 ms and a thread switch; generous for a loaded machine
    batcher.close()


def test_an_input_the_model_refuses_fails_its_own_request_only():
    model = Recorder()
    batcher = Batcher(model, max_batch=8, window_ms=50)
    futures = batcher.submit([1, -1, 3])
    assert futures[0].result(timeout=10) == {"double": 2} and futures[2].result(timeout=10) == {"double": 6}
    with pytest.raises(ValueError, match="negative"):
        futures[1].result(timeout=10)
    assert batcher.submit([5])[0].result(timeout=10) == {"double": 10}  # still serving
    batcher.close()


def test_close_answers_what_is_queued():
    batcher = Batcher(Recorder(delay=0.01), max_batch=2, window_ms=1)
    futures = batcher.submit(list(range(5)))
    batcher.close()
    assert all(f.done() for f in futures)


# --- the app, on stand-in predictors --------------------------------------------------------------


class Echo:
    """A stand-in Predictor: each row says what the input was."""

    def __init__(self, reads: str, fail_on: str | None = None) -> None:
        self.reads = reads
        self.info = {"task": f"{reads}_task", "classes": ["a", "b"], "backend": "none", "tunewise_version": "0"}
        self.fail_on = fail_on

    def predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        if self.fail_on is not None and self.fail_on in map(str, inputs):
            raise RuntimeError("the model broke")
        return [{"seen": x if isinstance(x, str) else list(x) if isinstance(x, tuple) else list(x.size)}
                for x in inputs]


def _client(reads: str, **options: Any):
    from fastapi.testclient import TestClient

    from tunewise.ship.serve import make_app

    fail_on = options.pop("fail_on", None)  # a failing model: see the 500 as a client does, not the exception
    return TestClient(make_app(Echo(reads, fail_on), **options), raise_server_exceptions=fail_on is None)


def _png(size: tuple[int, int] = (7, 5), mode: str = "RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_texts_and_pairs_are_read_from_json():
    with _client("text") as client:
        response = client.post("/predict", json={"texts": ["one", "two"]})
        assert response.json() == {"predictions": [{"seen": "one"}, {"seen": "two"}]}
        assert client.get("/metadata").json()["reads"] == "text"
    with _client("pair") as client:
        response = client.post("/predict", json={"pairs": [{"question": "q?", "context": "c."}]})
        assert response.json() == {"predictions": [{"seen": ["q?", "c."]}]}


def test_images_are_decoded_to_rgb_from_uploads_and_base64():
    with _client("image") as client:
        uploaded = client.post("/predict", files=[("files", ("a.png", _png(), "image/png")),
                                                  ("other", ("b.png", _png((3, 2), "I;16"), "image/png"))])
        data_url = "data:image/png;base64," + base64.b64encode(_png()).decode()
        as_json = client.post("/predict", json={"images": [data_url]})
    assert uploaded.json() == {"predictions": [{"seen": [7, 5]}, {"seen": [3, 2]}]}
    assert as_json.json() == {"predictions": [{"seen": [7, 5]}]}


@pytest.mark.parametrize(("reads", "request_", "status", "words"), [
    ("text", {"json": {"texts": ["fine", "  "]}}, 400, ["texts[1]", "empty text"]),
    ("text", {"json": {"texts": "not a list"}}, 400, ["'texts'", "non-empty list", "a string"]),
    ("text", {"json": {"texts": [3]}}, 400, ["texts[0]", "a number", "not a string"]),
    ("text", {"json": {"images": ["aGk="]}}, 400, ["reads texts, not images"]),
    ("text", {"files": [("files", ("a.png", b"x", "image/png"))]}, 400, ["file upload", '{"texts"']),
    ("text", {"json": {"texts": ["x"], "extra": 1}}, 400, ["unexpected field 'extra'"]),
    ("pair", {"json": {"pairs": [{"question": "q?"}]}}, 400, ["pairs[0]", "'question' and 'context'"]),
    ("pair", {"json": {"pairs": [{"question": "q?", "context": ""}]}}, 400, ["pairs[0].context", "empty"]),
    ("pair", {"json": {"texts": ["q ||| c"]}}, 400, ["reads pairs, not texts"]),
    ("image", {"json": {"images": [base64.b64encode(b"GIF89a broken").decode()]}}, 400, ["images[0]", "not an image"]),
    ("image", {"content": b"null", "headers": {"content-type": "application/json"}}, 400, ["null"]),
])
def test_a_bad_request_says_what_was_wrong_and_what_is_expected(reads, request_, status, words):
    with _client(reads) as client:
        response = client.post("/predict", **request_)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert all(w.lower() in error.lower() for w in words), error


def test_a_body_without_a_length_is_cut_off_at_the_upload_limit():
    chunks = (b"x" * 65536 for _ in range(40))  # 2.5 MB, sent chunked: no Content-Length
    with _client("text", max_upload_mb=1) as client:
        response = client.post("/predict", content=chunks, headers={"content-type": "application/json"})
        assert response.status_code == 413 and "upload limit of 1 MB" in response.json()["error"]
        assert client.post("/predict", json={"texts": ["still serving"]}).status_code == 200


def test_a_model_that_fails_gets_500_and_the_server_keeps_serving():
    with _client("text", fail_on="boom") as client:
        failed = client.post("/predict", json={"texts": ["boom"]})
        assert failed.status_code == 500 and "the model broke" in failed.json()["error"]
        assert client.post("/predict", json={"texts": ["fine"]}).json() == {"predictions": [{"seen": "fine"}]}


def test_inputs_from_json_and_read_images_refuse_with_the_item_named(tmp_path):
    assert inputs_from_json({"images": ["aGk="]}, "image") == [("images[0]", b"hi")]
    with pytest.raises(BadInput, match="images\\[1\\] is not valid base64"):
        inputs_from_json({"images": ["aGk=", "%%%"]}, "image")
    with pytest.raises(BadInput, match="400,000,000 pixels.*limit"):
        read_images([("file bomb.png", write_png_declaring(tmp_path / "bomb.png", 20_000, 20_000).read_bytes())])
    with pytest.raises(BadInput, match="file x.png is empty"):
        read_images([("file x.png", b"")])
    [image] = read_images([("a", _png(mode="LA"))])
    assert image.mode == "RGB"


def test_describe_reads_the_search_leaderboard_when_the_model_folder_has_no_record(tmp_path):
    (tmp_path / "model").mkdir()
    arms = [{"strategy": "full", "mean": 0.5}, {"strategy": "lora", "mean": 0.8}]
    (tmp_path / "leaderboard.json").write_text(json.dumps({"metric": "f1", "winner": "lora", "arms": arms}))
    model_json = {"task": "t", "classes": ["x"], "source": "pkg:minilm", "max_length": 64}
    info = describe(tmp_path / "model", model_json, "onnx")
    assert info["metric"] == "f1" and info["metric_value"] == 0.8 and info["strategy"] == "lora"
    assert info["base_model"] == "pkg:minilm" and info["max_length"] == 64 and info["input_size"] is None


def test_load_predictor_says_what_is_missing(tmp_path):
    with pytest.raises(TunewiseError, match="not a folder"):
        load_predictor(tmp_path / "nowhere")
    with pytest.raises(TunewiseError, match="no ONNX export.*tunewise export"):
        load_predictor(tmp_path, backend="onnx")


def test_the_serve_command_refuses_what_it_cannot_serve_in_one_line(tmp_path, capsys):
    import socket

    from tunewise.cli import main

    def error(*argv: str) -> str:
        assert main(["serve", *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    assert "not a folder" in error(str(tmp_path / "nowhere"), "--port", "0")
    assert "no ONNX export" in error(str(tmp_path), "--backend", "onnx", "--port", "0")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        assert f"cannot listen on 127.0.0.1:{port}" in error(str(tmp_path), "--port", port)
    for flag, value in (("--port", "70000"), ("--max-batch", "0"), ("--max-upload-mb", "0")):
        with pytest.raises(SystemExit):
            main(["serve", str(tmp_path), flag, value])
        assert f"{flag}: must be" in capsys.readouterr().err


# --- the serving path imports no torch ----------------------------------------------------------

NO_TORCH = """
import sys
from fastapi.testclient import TestClient
import tunewise.cli, tunewise.ship.serve, tunewise.ship.batching, tunewise.ship.predictor
from tunewise.ship.serve import make_app
from tunewise.ship.predictor import load_predictor
from tunewise.errors import TunewiseError

class Echo:
    reads = "image"
    info = {"task": "t", "backend": "none"}
    def predict(self, inputs):
        return [{"size": list(x.size)} for x in inputs]

with TestClient(make_app(Echo())) as client:
    print(client.post("/predict", files=[("files", ("a.png", open(sys.argv[1], "rb").read(), "image/png"))]).json())
    print(client.get("/").status_code)
try:
    load_predictor(sys.argv[2])
except TunewiseError as err:
    print("refused:", err)
print("torch" in sys.modules and sys.modules["torch"] is not None)
"""


def test_the_serving_path_imports_no_torch(tmp_path):
    """A sitecustomize puts None in sys.modules["torch"]: importing it raises. The app serves an image,
    and a folder with no ONNX export is refused with what to do, not with an ImportError."""
    (tmp_path / "guard").mkdir()
    (tmp_path / "guard" / "sitecustomize.py").write_text('import sys\nsys.modules["torch"] = None\n')
    Image.new("RGB", (4, 3)).save(tmp_path / "a.png")
    (tmp_path / "run").mkdir()
    src = Path(__file__).parents[2] / "src"
    result = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path / "a.png"), str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": f"{tmp_path / 'guard'}:{src}", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "{'predictions': [{'size': [4, 3]}]}" and lines[1] == "200"
    assert lines[2].startswith("refused:") and "needs torch" in lines[2] and "tunewise export" in lines[2]
    assert lines[3] == "False"


# --- TorchPredictor: tunewise predict's rows, for every task --------------------------------------

POSITIVE = ["the film was great fun", "a good movie"]
NEGATIVE = ["the film was dull", "a bad movie"]
CONTEXT = "acme corp was founded in oslo by maria lopez ."


def _fit_text(tiny_bert: Path, folder: Path, task: str) -> Path:
    from tunewise import DataConfig, fit

    if task == "text_classification":
        path = folder / "reviews.csv"
        rows = [(t, "pos") for t in POSITIVE] * 6 + [(t, "neg") for t in NEGATIVE] * 6
        path.write_text("review,sentiment\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
        data = DataConfig(data=str(path), text_column="review", label_column="sentiment", max_length=16)
    elif task == "token_classification":
        path = folder / "train.conll"
        sentence = [("maria", "B-PER"), ("lopez", "I-PER"), ("was", "O"), ("in", "O"), ("oslo", "B-LOC")]
        path.write_text("\n".join(["-DOCSTART- O", ""] + ([f"{w} {t}" for w, t in sentence] + [""]) * 12))
        data = DataConfig(data=str(path), max_length=16)
    else:
        path = folder / "squad.json"
        qas = [{"id": f"q{i}", "question": "who founded acme corp ?",
                "answers": [{"text": "maria lopez", "answer_start": CONTEXT.index("maria lopez")}]} for i in range(12)]
        path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}))
        data = DataConfig(data=str(path), max_length=24, doc_stride=8)
    fit(f"hf:{tiny_bert}", data, "full", task=task, out=folder / "run", epochs=1, batch_size=8, num_workers=0)
    return folder / "run"


@pytest.mark.parametrize(("task", "inputs", "given"), [
    ("text_classification", ["a good movie", "the film was dull"], ["a good movie", "the film was dull"]),
    ("token_classification", ["maria lopez was in oslo"], ["maria lopez was in oslo"]),
    ("question_answering", [("who founded acme corp ?", CONTEXT)], [f"who founded acme corp ? ||| {CONTEXT}"]),
])
def test_torch_predictor_gives_the_rows_of_tunewise_predict_for_text(tiny_bert, tmp_path, task, inputs, given):
    from tunewise import predict

    run = _fit_text(tiny_bert, tmp_path, task)
    predictor = load_predictor(run)
    assert predictor.reads == ("pair" if task == "question_answering" else "text")
    assert predictor.info["task"] == task and predictor.info["max_length"] in (16, 24)
    echoed = {"text", "question", "context"}
    theirs = [{k: v for k, v in row.items() if k not in echoed} for row in predict(run, given)]
    assert predictor.predict(inputs) == theirs
    json.dumps(predictor.predict(inputs))  # plain JSON values


def _dense_export(task: str, folder: Path, classes: list[str]) -> Path:
    """An untrained dense model exported as fit exports it: predict reads it as any other."""
    from dataclasses import replace

    from tunewise.backbones import load_backbone
    from tunewise.export import export_dense
    from tunewise.tasks import get_task

    backbone = load_backbone("random:timm:test_resnet", pretrained=False)
    backbone = replace(backbone, preprocess=backbone.preprocess.at_size(64))
    model = get_task(task).build_model(backbone, classes)
    folder.mkdir()
    export_dense(model, backbone, backbone.preprocess, get_task(task), classes, folder)
    return folder


@pytest.mark.parametrize("task", ["semantic_segmentation", "object_detection"])
def test_torch_predictor_gives_the_rows_of_tunewise_predict_for_dense_tasks(tmp_path, task):
    from tunewise import predict

    classes = ["background", "red", "blue"] if task == "semantic_segmentation" else ["red", "blue"]
    run = _dense_export(task, tmp_path / "run", classes)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    predictor = load_predictor(run)
    [row] = predictor.predict(read_images([("a", (tmp_path / "a.png").read_bytes())]))
    [theirs] = predict(run, [tmp_path / "a.png"])
    if task == "object_detection":
        assert row == {"objects": theirs["objects"]}
        return
    assert row["classes"] == theirs["classes"]
    with Image.open(io.BytesIO(base64.b64decode(row["mask_png"]))) as mask:
        assert mask.size == (80, 48) and mask.mode == "P"
        assert set(np.unique(np.asarray(mask))) <= set(range(len(classes)))
