"""Detection and segmentation through the CLI: fit on files the test writes (COCO JSON; image and
mask PNG folders), evaluate the export, predict into COCO JSON / PNG masks with drawings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_cli import tunewise

SIZE = 64
COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def canvases(count: int, seed: int):
    """(image, [(class index, box)]) with one or two coloured squares on grey noise."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        image = rng.integers(90, 130, (SIZE, SIZE, 3), dtype=np.uint8)
        objects = []
        for slot in range(rng.integers(1, 3)):
            c = int(rng.integers(0, 2))
            side = int(rng.integers(14, 24))
            x, y = int(rng.integers(0, SIZE // 2 - side // 2)) + slot * SIZE // 2, int(rng.integers(0, SIZE - side))
            x = min(x, SIZE - side)
            image[y:y + side, x:x + side] = list(COLORS.values())[c]
            objects.append((c, [x, y, x + side, y + side]))
        yield image, objects


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    for split, count, seed in (("train", 12, 0), ("val", 6, 1), ("test", 6, 2)):
        (root / "images").mkdir(exist_ok=True)
        images, annotations = [], []
        for i, (image, objects) in enumerate(canvases(count, seed)):
            name = f"{split}{i}.png"
            Image.fromarray(image).save(root / "images" / name)
            images.append({"id": i, "file_name": name, "width": SIZE, "height": SIZE})
            for c, (x1, y1, x2, y2) in objects:
                annotations.append({"id": len(annotations), "image_id": i, "category_id": 7 + c,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        categories = [{"id": 7 + c, "name": name} for c, name in enumerate(COLORS)]
        (root / f"{split}.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                         "categories": categories}))
    return root


@pytest.fixture(scope="module")
def mask_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("masks")
    for split, count, seed in (("train", 12, 0), ("val", 6, 1), ("test", 6, 2)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        for i, (image, objects) in enumerate(canvases(count, seed)):
            mask = np.zeros((SIZE, SIZE), np.uint8)
            for c, (x1, y1, x2, y2) in objects:
                mask[y1:y2, x1:x2] = c + 1
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("background\nred\nblue\n")
    return root


FIT = ["--model", "random:timm:test_resnet", "--strategy", "full", "--epochs", "1", "--batch-size", "6",
       "--image-size", str(SIZE), "--num-workers", "0"]


@pytest.mark.parametrize("detector", ["faster_rcnn", "fcos"])
def test_detection_fit_evaluate_predict(detector, coco_folder, tmp_path):
    from pycocotools.coco import COCO

    run = tmp_path / "run"
    fit = tunewise("fit", "--task", "object_detection", "--data", coco_folder, *FIT, "--detector", detector,
                   "--out", run)
    assert fit.returncode == 0, fit.stderr
    record = json.loads((run / "record.json").read_text())
    assert record["metric"] == "map" and record["classes"] == ["red", "blue"] and 0 <= record["test"]["map"] <= 1
    assert json.loads((run / "model.json").read_text())["detector"] == detector

    evaluate = tunewise("evaluate", run, "--data", coco_folder, "--split", "test", "--json")
    assert evaluate.returncode == 0, evaluate.stderr
    assert json.loads(evaluate.stdout)["map"] == pytest.approx(record["test"]["map"], abs=1e-6)  # same model, split

    out = tmp_path / "predicted"
    predict = tunewise("predict", run, coco_folder / "images" / "test0.png", coco_folder / "images" / "test1.png",
                       "--output", out)
    assert predict.returncode == 0, predict.stderr
    results = COCO(str(out / "predictions.json"))  # pycocotools reads it as a COCO file
    assert len(results.getImgIds()) == 2
    assert [c["name"] for c in results.loadCats(results.getCatIds())] == ["red", "blue"]
    assert sorted(p.name for p in (out / "drawn").iterdir()) == ["0000-test0.png", "0001-test1.png"]


def test_segmentation_fit_evaluate_predict(mask_folder, tmp_path):
    run = tmp_path / "run"
    fit = tunewise("fit", "--task", "semantic_segmentation", "--data", mask_folder, *FIT, "--out", run)
    assert fit.returncode == 0, fit.stderr
    record = json.loads((run / "record.json").read_text())
    assert record["metric"] == "miou" and record["classes"] == ["background", "red", "blue"]

    evaluate = tunewise("evaluate", run, "--data", mask_folder, "--split", "test", "--json")
    assert evaluate.returncode == 0, evaluate.stderr
    assert json.loads(evaluate.stdout)["miou"] == pytest.approx(record["test"]["miou"], abs=1e-6)

    out = tmp_path / "predicted"
    predict = tunewise("predict", run, mask_folder / "test" / "images", "--output", out)
    assert predict.returncode == 0, predict.stderr
    masks = sorted((out / "masks").iterdir())
    assert len(masks) == 6 and len(list((out / "drawn").iterdir())) == 6
    with Image.open(masks[0]) as mask:
        assert mask.mode == "P" and mask.size == (SIZE, SIZE)
        assert set(np.unique(np.asarray(mask))) <= {0, 1, 2}


def test_a_box_outside_its_image_is_a_clear_error(coco_folder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "images").symlink_to(coco_folder / "images")
    data = json.loads((coco_folder / "train.json").read_text())
    data["annotations"][0]["bbox"] = [50, 50, 40, 40]
    (broken / "train.json").write_text(json.dumps(data))
    fit = tunewise("fit", "--task", "object_detection", "--data", broken / "train.json", *FIT, "--out", tmp_path / "r")
    assert fit.returncode != 0 and "Traceback" not in fit.stderr
    assert "outside the image" in fit.stderr and "--clip-boxes" in fit.stderr


def test_segmentation_search_reports_the_winners_masks(mask_folder, tmp_path):
    out = tmp_path / "search"
    search = tunewise("search", "--task", "semantic_segmentation", "--data", mask_folder,
                      "--model", "random:timm:test_resnet", "--strategies", "linear_probe,full", "--epochs", "1",
                      "--rates", "1", "--seeds", "1", "--finalists", "1", "--no-scratch", "--batch-size", "6",
                      "--image-size", str(SIZE), "--num-workers", "0", "--out", out, timeout=600)
    assert search.returncode == 0, search.stderr
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["metric"] == "miou" and board["winner"] in {"linear_probe", "full"}
    with Image.open(out / "predictions.png") as figure:
        assert figure.width > figure.height  # one column per held-out image
    assert "predictions.png" in (out / "report.md").read_text()
    assert (out / "model" / "model.safetensors").is_file()


def test_lp_ft_on_segmentation_starts_from_the_probed_decoder(mask_folder, tmp_path):
    """The probe cannot cache multi-scale maps, so it saves the whole model: LP-FT takes its head."""
    from safetensors.torch import load_file

    from tunewise import DataConfig, TrainConfig, fit
    from tunewise.strategies import get_strategy

    record = fit("random:timm:test_resnet", DataConfig(data=str(mask_folder), image_size=SIZE),
                 get_strategy("lp_ft", probe_epochs=1), task="semantic_segmentation",
                 train=TrainConfig(epochs=1, batch_size=6, num_workers=0), out=tmp_path / "run")
    probe = load_file(str(tmp_path / "run" / "probe" / "model.safetensors"))
    assert record.strategy == "lp_ft" and record.val["miou"] >= 0
    assert any(k.startswith("head.") for k in probe)
