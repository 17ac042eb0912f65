"""The web page's other views in headless Chromium: boxes and a mask drawn over the uploaded image,
entities marked in the text, a question's answer. The app serves stand-in predictors that answer a
fixed row (no model, no torch), on uvicorn in a thread of this process: the page's drawing is what is
tested; the rows themselves are TorchPredictor's and OnnxModel's, tested against `tunewise predict`."""

from __future__ import annotations

import base64
import io
import socket
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image
from serving import chromium, page_errors, skip_without_chromium

GREY = (128, 128, 128)


def _mask_png() -> str:
    """Class 2 (blue in VOC's palette) on the right half of a 40 x 40 image, background on the left."""
    from tunewise.dense_predict import palette_mask

    mask = np.zeros((40, 40), np.uint8)
    mask[:, 20:] = 2
    buffer = io.BytesIO()
    palette_mask(mask).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


ROWS: dict[str, tuple[str, dict[str, Any], str]] = {  # kind -> what it reads, the row it answers, the label shown
    "boxes": ("image", {"objects": [{"label": "red", "score": 0.91, "box": [4.0, 4.0, 30.0, 30.0]}]}, "red"),
    "mask": ("image", {"mask_png": _mask_png(), "classes": {"background": 0.5, "blue": 0.5}},
             "background, blue"),
    "entities": ("text", {"entities": [{"entity_group": "PER", "score": 0.9, "word": "maria lopez", "start": 0,
                                        "end": 11}]}, "1 entity"),
    "answer": ("pair", {"answer": "oslo", "score": 7.5}, "oslo"),
}


class StandIn:
    """A Predictor that answers the same row for every input."""

    def __init__(self, reads: str, row: dict[str, Any]) -> None:
        self.reads, self.row = reads, row
        self.info = {"task": f"stand-in for {reads}s", "classes": ["red", "blue"], "backend": "none",
                     "tunewise_version": "test"}

    def predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        return [self.row for _ in inputs]


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    """One uvicorn server per stand-in, each on an ephemeral loopback port, in threads of this process."""
    import uvicorn

    from tunewise.ship.serve import make_app

    servers, urls = [], {}
    for kind, (reads, row, _) in ROWS.items():
        listening = socket.create_server(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(make_app(StandIn(reads, row)), log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
        thread.start()
        servers.append((server, thread, listening))
        urls[kind] = f"http://127.0.0.1:{listening.getsockname()[1]}"
    yield urls
    for server, thread, listening in servers:
        server.should_exit = True
        thread.join(timeout=30)
        listening.close()


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Iterator[Any]:
    skip_without_chromium()
    with chromium(tmp_path_factory.mktemp("profile")) as driver:
        yield driver


def _open(driver: Any, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/")
    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))


def _shown(driver: Any) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "label").text.strip()
                                    or d.find_element(By.ID, "status").text)
    assert not driver.find_element(By.ID, "status").text, driver.find_element(By.ID, "status").text
    return driver.find_element(By.ID, "label").text.strip()


def _pixel(driver: Any, x: int, y: int) -> list[int]:
    return driver.execute_script(
        "return Array.from(document.getElementById('view').getContext('2d').getImageData(arguments[0], "
        "arguments[1], 1, 1).data);", x, y)


@pytest.mark.parametrize("kind", ["boxes", "mask"])
def test_boxes_and_masks_are_drawn_over_the_uploaded_image(driver, urls, kind, tmp_path):
    from selenium.webdriver.common.by import By

    image = tmp_path / "grey.png"
    Image.new("RGB", (40, 40), GREY).save(image)
    _open(driver, urls[kind])
    driver.find_element(By.ID, "file").send_keys(str(image))
    assert _shown(driver) == ROWS[kind][2]
    driver.execute_script("return new Promise((done) => setTimeout(done, 300));")  # the mask's image decodes
    assert driver.find_element(By.ID, "view").is_displayed()
    if kind == "boxes":
        assert _pixel(driver, 4, 15)[:3] != list(GREY) and _pixel(driver, 25, 27)[:3] == list(GREY)
    else:
        assert _pixel(driver, 10, 20)[:3] == list(GREY)  # background: clear
        r, g, b, _ = _pixel(driver, 30, 20)  # class 2, VOC's (0, 128, 0), half over grey
        assert g > r + 30 and g > b + 30
    driver.save_screenshot(str(tmp_path / f"serve-page-{kind}.png"))
    assert page_errors(driver) == []


def test_entities_are_marked_in_the_text(driver, urls):
    from selenium.webdriver.common.by import By

    _open(driver, urls["entities"])
    driver.find_element(By.ID, "text").send_keys("maria lopez was in oslo")
    driver.find_element(By.ID, "send-text").click()
    assert _shown(driver) == "1 entity"
    assert driver.find_element(By.CSS_SELECTOR, "#entities mark").text == "maria lopez [PER]"
    assert page_errors(driver) == []


def test_a_question_gets_its_answer(driver, urls):
    from selenium.webdriver.common.by import By

    _open(driver, urls["answer"])
    driver.find_element(By.ID, "question").send_keys("where?")
    driver.find_element(By.ID, "context").send_keys("acme corp was founded in oslo .")
    driver.find_element(By.ID, "send-pair").click()
    assert _shown(driver) == "oslo"
    assert page_errors(driver) == []


def test_a_refused_request_shows_the_servers_error(driver, urls):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open(driver, urls["entities"])
    driver.find_element(By.ID, "send-text").click()  # an empty text
    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "status").text)
    assert "empty text" in driver.find_element(By.ID, "status").text
    assert driver.find_element(By.ID, "status").get_attribute("class") == "error"
