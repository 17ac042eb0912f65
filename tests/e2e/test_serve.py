"""`tunewise serve` as a client meets it: one server subprocess on 127.0.0.1 (an ephemeral port) for the
whole module, serving a tiny fitted image classifier on torch. Every endpoint, a batch, 50 concurrent
requests, the bad requests, the web page in a real browser, and a run folder left untouched."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import write_png_declaring
from hardening import snapshot
from PIL import Image
from serving import Server, chromium, page_errors, skip_without_chromium, start_server

UPLOAD_MB = 1


@dataclass
class Served:
    server: Server
    run: Path
    images: list[Path]
    before: dict[Path, str]
    """The run folder's files and their digests before the server started."""


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """HOME for the module's fits and servers: the caches, never the user's."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def fitted(image_folder, tiny_weights, tmp_path_factory, home) -> Path:
    """One tiny image classifier (timm's test_resnet, 3 colour classes) for the whole module."""
    from tunewise import DataConfig, TrainConfig, fit

    run = tmp_path_factory.mktemp("serve") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        fit("timm:test_resnet", DataConfig(data=str(image_folder), image_size=32), "full", weights=tiny_weights,
            train=TrainConfig(epochs=1, batch_size=12, num_workers=0, device="cpu"), out=run)
    return run


@pytest.fixture(scope="module")
def served(fitted, image_folder, home) -> Iterator[Served]:
    run = fitted
    before = snapshot(run)
    server = start_server(run, "--max-upload-mb", str(UPLOAD_MB), env={"HOME": str(home)})
    images = sorted(image_folder.rglob("*.png"))
    yield Served(server, run, images, before)
    code = server.stop()
    assert code == 0, server.output()


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def _post(served: Served, **request) -> httpx.Response:
    return httpx.post(f"{served.server.url}/predict", timeout=120, **request)


def _same_rows(ours: list[dict], theirs: list[dict]) -> None:
    """The same labels; the same probabilities up to float noise (a batch of other size sums differently)."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a["label"] == b["label"] and a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], abs=1e-5) for k in a if k.startswith("p"))


def test_health_metadata_docs_and_the_page(served):
    url = served.server.url
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["backend"] == "torch"
    meta = httpx.get(f"{url}/metadata").json()
    record = json.loads((served.run / "record.json").read_text())
    assert meta["task"] == "image_classification" and meta["classes"] == record["classes"]
    assert meta["metric"] == "accuracy" and meta["metric_value"] == pytest.approx(record["val"]["accuracy"])
    assert meta["strategy"] == "full" and meta["base_model"] == "timm:test_resnet"
    assert meta["input_size"] == 32 and meta["reads"] == "image" and meta["tunewise_version"]
    schema = httpx.get(f"{url}/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert "swagger" in httpx.get(f"{url}/docs").text.lower()
    page = httpx.get(f"{url}/")
    assert page.headers["content-type"].startswith("text/html") and 'id="label"' in page.text


def test_a_batch_gets_the_rows_of_tunewise_predict(served):
    from tunewise import predict

    chosen = served.images[:5]
    response = _post(served, files=_files(chosen))
    assert response.status_code == 200, response.text
    theirs = [{k: v for k, v in row.items() if k != "path"} for row in predict(served.run, chosen)]
    _same_rows(response.json()["predictions"], theirs)


def test_base64_json_answers_as_the_upload_does(served):
    chosen = served.images[-3:]
    as_json = _post(served, json={"images": [base64.b64encode(p.read_bytes()).decode() for p in chosen]})
    uploaded = _post(served, files=_files(chosen))
    assert as_json.status_code == uploaded.status_code == 200
    _same_rows(as_json.json()["predictions"], uploaded.json()["predictions"])


def test_50_concurrent_requests_are_batched_and_answered_as_sequential_ones(served):
    chosen = [served.images[i % len(served.images)] for i in range(50)]
    sequential = {p: _post(served, files=_files([p])).json()["predictions"][0] for p in set(chosen)}
    before = httpx.get(f"{served.server.url}/health").json()
    with httpx.Client(base_url=served.server.url, timeout=120) as client, ThreadPoolExecutor(25) as pool:
        answers = list(pool.map(lambda p: client.post("/predict", files=_files([p])), chosen))
    assert [a.status_code for a in answers] == [200] * 50
    _same_rows([a.json()["predictions"][0] for a in answers], [sequential[p] for p in chosen])
    after = httpx.get(f"{served.server.url}/health").json()
    assert after["inputs"] - before["inputs"] == 50
    assert after["batches"] - before["batches"] < 50  # some requests shared a model call


def _png_of(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb(tmp_path: Path) -> bytes:
    return write_png_declaring(tmp_path / "bomb.png", 20_000, 20_000).read_bytes()


BAD = {  # what is sent -> the status and the words the error must hold
    "not-an-image": (lambda t: {"files": [("files", ("notes.txt", b"not an image", "text/plain"))]}, 400,
                     ["notes.txt", "not an image", "send image files"]),
    "empty-file": (lambda t: {"files": [("files", ("empty.png", b"", "image/png"))]}, 400, ["empty.png", "empty"]),
    "decompression-bomb": (lambda t: {"files": [("files", ("bomb.png", _bomb(t), "image/png"))]}, 400,
                           ["bomb.png", "400,000,000 pixels", "limit"]),
    "too-large": (lambda t: {"files": [("files", ("big.bin", b"x" * (UPLOAD_MB * 2 << 20), "image/png"))]}, 413,
                  ["upload limit of 1 MB", "--max-upload-mb"]),
    "texts-to-an-image-model": (lambda t: {"json": {"texts": ["a text"]}}, 400,
                                ["reads images, not texts", '"images"']),
    "unknown-field": (lambda t: {"json": {"imgs": ["aGk="]}}, 400, ["'imgs'", "images"]),
    "not-base64": (lambda t: {"json": {"images": ["not base64!"]}}, 400, ["images[0]", "base64"]),
    "empty-list": (lambda t: {"json": {"images": []}}, 400, ["non-empty list"]),
    "not-json": (lambda t: {"content": b"{oops", "headers": {"content-type": "application/json"}}, 400,
                 ["not valid json"]),
    "plain-text-body": (lambda t: {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415,
                        ["text/plain", "multipart/form-data"]),
    "a-form-field-beside-the-file": (lambda t: {"data": {"note": "hi"}, "files": [("files", ("a.png", _png_of((8, 8)),
                                                                                            "image/png"))]},
                                     400, ["'note'", "not a file"]),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_request_gets_a_4xx_saying_what_was_wrong_and_the_server_keeps_serving(served, case, tmp_path):
    make, status, words = BAD[case]
    response = _post(served, **make(tmp_path))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert all(w.lower() in error.lower() for w in words), error
    assert _post(served, files=_files(served.images[:1])).status_code == 200


def test_an_unknown_endpoint_lists_the_endpoints(served):
    response = httpx.get(f"{served.server.url}/predictions")
    assert response.status_code == 404 and "POST /predict" in response.json()["error"]


def test_the_web_page_shows_the_label_of_an_uploaded_textile_image(served, tmp_path):
    """Headless Chromium (Debian's, driven by selenium with Debian's chromedriver) opens the page and
    uploads one textile image; the label it shows is the one POST /predict gives."""
    skip_without_chromium()
    from conformal_clip_data import textile_simulated_root

    textile = sorted(Path(textile_simulated_root()).rglob("*.jpg"))[0]
    expected = _post(served, files=_files([textile])).json()["predictions"][0]
    screenshot = tmp_path / "serve-page.png"
    label, bars = _label_in_chromium(served.server.url, textile, screenshot, tmp_path / "profile")
    assert label == expected["label"]
    assert bars == len(json.loads((served.run / "model.json").read_text())["classes"])
    assert screenshot.stat().st_size > 1000


def _label_in_chromium(url: str, image: Path, screenshot: Path, profile: Path) -> tuple[str, int]:
    """The label the page shows for `image`, and how many probability bars; a screenshot is saved."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium(profile) as driver:
        driver.get(f"{url}/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "yes")
        driver.find_element(By.ID, "file").send_keys(str(image))
        wait.until(lambda d: d.find_element(By.ID, "label").text.strip()
                   or d.find_element(By.ID, "status").get_attribute("class") == "error")
        label = driver.find_element(By.ID, "label").text.strip()
        assert label, driver.find_element(By.ID, "status").text
        bars = len(driver.find_elements(By.CSS_SELECTOR, "#bars li"))
        driver.save_screenshot(str(screenshot))
        assert page_errors(driver) == []
        return label, bars


def test_an_onnx_export_is_served_with_torch_unimportable(fitted, image_folder, home, tmp_path):
    """The run's ONNX export (written here, with torch) served by a process in which importing torch
    fails (a sitecustomize puts None in sys.modules["torch"]): the same labels as the torch model's."""
    from tunewise import predict
    from tunewise.ship.onnx_export import export_onnx

    run = tmp_path / "run"
    shutil.copytree(fitted, run)
    export_onnx(run)
    (tmp_path / "guard").mkdir()
    (tmp_path / "guard" / "sitecustomize.py").write_text('import sys\nsys.modules["torch"] = None\n')
    src = Path(__file__).parents[2] / "src"
    server = start_server(run, env={"HOME": str(home), "PYTHONPATH": f"{tmp_path / 'guard'}:{src}"})
    try:
        chosen = sorted(image_folder.rglob("*.png"))[:4]
        response = httpx.post(f"{server.url}/predict", files=_files(chosen), timeout=120)
        assert response.status_code == 200, response.text + server.output()
        meta = httpx.get(f"{server.url}/metadata").json()
    finally:
        assert server.stop() == 0, server.output()
    assert "ModuleNotFoundError" not in server.output()
    assert meta["backend"] == "onnxruntime" and meta["parity_max_abs_diff"] < 1e-4 and meta["reads"] == "image"
    theirs = [{k: v for k, v in row.items() if k != "path"} for row in predict(run, chosen)]
    _same_rows(response.json()["predictions"], theirs)


def test_nothing_was_written_to_the_run_folder(served):
    """After every request above (this test runs last: pytest keeps file order), good and bad: the run
    folder holds the same files, byte for byte."""
    assert snapshot(served.run) == served.before
    assert sorted(p.name for p in served.run.iterdir()) == sorted({p.relative_to(served.run).parts[0]
                                                                   for p in served.before})
