"""Issue 13, run folders: a damaged or edited run folder, and the wrong inputs for a fitted model.

One tiny image run and one tiny text run are fitted once per module, beside a segmentation export;
each case damages a copy of one (shutil.copytree), runs `evaluate` or `predict` on it through the
CLI in-process, and checks: exit 2, one error line naming the problem, no traceback, and the
damaged folder's files byte-identical afterwards (a failed load rewrites nothing).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hardening import assert_user_error, run, snapshot

REVIEWS = [("the film was great fun", "pos"), ("a good movie", "pos"), ("the film was dull", "neg"),
           ("a bad movie", "neg")] * 6
TEXT_FLAGS = ("--text-column", "review", "--label-column", "sentiment", "--max-length", "16")
UNWRITABLE = Path("/sys/tunewise-harden")
"""Not even root may create a file under /sys: an output folder nobody can write to."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, image_folder, tiny_bert, tiny_weights) -> dict[str, Path]:
    """The three run folders every case copies, and the inputs the cases pass."""
    from tunewise import DataConfig, fit

    base = tmp_path_factory.mktemp("runfolder")
    reviews = base / "reviews.csv"
    reviews.write_text("review,sentiment\n" + "".join(f'"{t}",{label}\n' for t, label in REVIEWS))
    cheap = {"epochs": 1, "num_workers": 0, "device": "cpu", "batch_size": 8, "test": False}
    fit("pkg:efficientnet_lite0", DataConfig(data=str(image_folder), image_size=32), "linear_probe",
        out=base / "image", **cheap)
    fit(f"hf:{tiny_bert}", DataConfig(data=str(reviews), text_column="review", label_column="sentiment",
                                      max_length=16), "linear_probe", task="text_classification", out=base / "text",
        **cheap)
    _export_segmentation(base / "dense", tiny_weights)
    notes = base / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("a good movie\n")
    return {"image": base / "image", "text": base / "text", "dense": base / "dense", "images": image_folder,
            "reviews": reviews, "notes": notes, "photo": image_folder / "red" / "000.png",
            "notes_file": notes / "notes.txt"}


def _export_segmentation(folder: Path, weights: Path) -> None:
    """A segmentation model's folder as fit exports it (export_model), without the training: loading
    and predicting are what the cases try, and a dense fit is the slowest of the three."""
    from tunewise.backbones import load_backbone
    from tunewise.export import export_model
    from tunewise.tasks import get_task

    backbone = load_backbone("timm:test_resnet", weights=weights)  # pretrained: its BatchNorm is frozen
    task, classes = get_task("semantic_segmentation"), ["a", "b"]
    export_model(task.build_model(backbone, classes), backbone, backbone.preprocess.at_size(32), task, classes, folder)


# --- damage ------------------------------------------------------------------------------------

def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Damage: `change` edits the folder's JSON file `name` in place."""
    def damage(folder: Path) -> None:
        info = json.loads((folder / name).read_text())
        change(info)
        (folder / name).write_text(json.dumps(info))
    return damage


def write(name: str, text: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / name).write_text(text)
    return damage


def truncate(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def resize_head(key: str, rows: int) -> Callable[[Path], None]:
    """Damage: the weights' tensor `key` (a head) replaced by one with `rows` outputs."""
    def damage(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        state = load_file(str(folder / "model.safetensors"))
        state[key] = state[key][:1].repeat(rows, *[1] * (state[key].dim() - 1))
        save_file(state, str(folder / "model.safetensors"))
    return damage


def weights_from(kind: str) -> Callable[[Path], None]:
    """Damage: another run's model.safetensors copied over this one's."""
    def damage(folder: Path) -> None:
        shutil.copy(folder.parent.parent / "source" / kind / "model.safetensors", folder / "model.safetensors")
    return damage


def same(key: str, value: object) -> Callable[[dict], None]:
    return lambda info: info.__setitem__(key, value)


def no_change(folder: Path) -> None:
    """Nothing damaged: the case is about the inputs."""


@dataclass(frozen=True)
class Case:
    kind: str
    """Which run folder is copied: image, text or dense."""
    damage: Callable[[Path], None]
    command: tuple[str, ...]
    """{run} is the damaged copy, {name} a path from `runs`, {out} a path nobody can write."""
    words: tuple[str, ...]


EVAL_IMAGE = ("evaluate", "{run}", "--data", "{images}")
EVAL_TEXT = ("evaluate", "{run}", "--data", "{reviews}", *TEXT_FLAGS)
PREDICT_IMAGE = ("predict", "{run}", "{photo}")
PREDICT_TEXT = ("predict", "{run}", "a good movie")
FIT_FROM = ("fit", "--model", "{run}", "--data", "{images}", "--epochs", "1", "--num-workers", "0", "--device", "cpu",
            "--image-size", "32", "--out", "{run}-refit")
EDITED = ("edited or damaged", "refit")

CASES = {
    # model.json
    "image-no-classes": Case("image", edit_json("model.json", lambda i: i.pop("classes")), EVAL_IMAGE,
                             ("model.json", "'classes'", *EDITED)),
    "text-no-classes": Case("text", edit_json("model.json", lambda i: i.pop("classes")), PREDICT_TEXT,
                            ("model.json", "'classes'", *EDITED)),
    "classes-not-a-list": Case("image", edit_json("model.json", same("classes", "blue,green,red")), PREDICT_IMAGE,
                               ("model.json", "'classes'", "list", "str")),
    "not-json": Case("image", write("model.json", '{"arch": "timm:tf_efficientnet_lite0",'), PREDICT_IMAGE,
                     ("model.json", "not valid JSON", "line 1", *EDITED)),
    "not-an-object": Case("text", write("model.json", '["neg", "pos"]'), EVAL_TEXT,
                          ("model.json", "JSON object", "list", *EDITED)),
    "unknown-task": Case("image", edit_json("model.json", same("task", "image_clasification")), PREDICT_IMAGE,
                         ("model.json", "image_clasification", "did you mean 'image_classification'")),
    "image-json-of-another-task": Case("image", edit_json("model.json", same("task", "semantic_segmentation")),
                                       EVAL_IMAGE, ("model.json", "semantic_segmentation", "image_classification",
                                                    *EDITED)),
    "text-json-of-another-task": Case("text", edit_json("model.json", same("task", "token_classification")),
                                      PREDICT_TEXT, ("model.safetensors", "bert.pooler", "token_classification",
                                                     *EDITED)),
    "unknown-preprocess-field": Case("image", edit_json("model.json", lambda i: i["preprocess"].update(crop_pct=0.9)),
                                     EVAL_IMAGE, ("model.json", "crop_pct", "input_size", *EDITED)),
    "preprocess-wrong-type": Case("image", edit_json("model.json", lambda i: i["preprocess"].update(input_size="32")),
                                  PREDICT_IMAGE, ("model.json", "input_size", "int", "str")),
    "text-max-length-wrong-type": Case("text", edit_json("model.json", same("max_length", "16")), EVAL_TEXT,
                                       ("model.json", "max_length", "int", "str")),
    "unknown-detector": Case("dense", edit_json("model.json", lambda i: i.update(task="object_detection",
                                                                                detector="yolo")),
                             PREDICT_IMAGE, ("model.json", "'detector'", "'faster_rcnn', 'fcos'", *EDITED)),
    "image-classes-added": Case("image", edit_json("model.json", lambda i: i["classes"].append("pink")), EVAL_IMAGE,
                                ("model.safetensors", "classifier.bias", "[3]", "[4]", "4 classes", *EDITED)),
    "dense-classes-added": Case("dense", edit_json("model.json", lambda i: i["classes"].append("circle")),
                                PREDICT_IMAGE, ("model.safetensors", "shape", *EDITED)),
    # the weights and the framework's files
    "image-truncated": Case("image", truncate, PREDICT_IMAGE, ("model.safetensors", "cannot read", "refit")),
    "text-truncated": Case("text", truncate, PREDICT_TEXT, ("model.safetensors", "cannot read", "refit")),
    "dense-truncated": Case("dense", truncate, EVAL_IMAGE,
                            ("model.safetensors", "cannot read", "refit")),
    "image-head-resized": Case("image", resize_head("classifier.weight", 5), EVAL_IMAGE,
                               ("model.safetensors", "classifier.weight", "[5, 1280]", "[3, 1280]", *EDITED)),
    "text-head-resized": Case("text", resize_head("classifier.bias", 3), PREDICT_TEXT,
                              ("model.safetensors", "classifier.bias", "[3]", "[2]", *EDITED)),
    "image-weights-of-a-text-model": Case("image", weights_from("text"), PREDICT_IMAGE,
                                          ("model.safetensors", "bert.", *EDITED)),
    "text-config-not-json": Case("text", write("config.json", "{"), PREDICT_TEXT,
                                 ("config.json", *EDITED)),
    "text-tokenizer-not-json": Case("text", write("tokenizer.json", "{"), EVAL_TEXT,
                                    ("transformers model", "JSONDecodeError", *EDITED)),
    "fit-from-a-truncated-run": Case("image", truncate, FIT_FROM, ("model.safetensors", "cannot read", "refit")),
    "fit-from-a-run-whose-json-is-damaged": Case("text", write("model.json", "{"), FIT_FROM,
                                                 ("model.json", "not valid JSON", *EDITED)),
    # the wrong inputs for the model
    "text-model-given-an-image": Case("text", no_change, ("predict", "{run}", "{photo}"),
                                      ("000.png", "reads texts", ".txt")),
    "text-model-given-a-folder": Case("text", no_change, ("predict", "{run}", "{images}"),
                                      ("reads texts", "folder", ".txt")),
    "image-model-given-a-text-file": Case("image", no_change, ("predict", "{run}", "{notes_file}"),
                                          ("notes.txt", "reads images", ".png")),
    "image-model-given-a-folder-of-texts": Case("image", no_change, ("predict", "{run}", "{notes}"),
                                                ("notes", "no images", "reads images")),
    "predict-csv-unwritable": Case("image", no_change, ("predict", "{run}", "{photo}", "--output",
                                                        "{out}/predictions.csv"),
                                   (str(UNWRITABLE), "cannot write")),
    "dense-predict-folder-unwritable": Case("dense", no_change, ("predict", "{run}", "{photo}", "--output", "{out}"),
                                            (str(UNWRITABLE), "cannot write")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_damaged_run_folder_or_wrong_input_is_one_line(name, runs, tmp_path, capsys):
    case = CASES[name]
    (tmp_path / "source").mkdir()
    for kind in ("image", "text", "dense"):  # what weights_from copies from
        (tmp_path / "source" / kind).symlink_to(runs[kind])
    folder = tmp_path / "case" / "run"
    shutil.copytree(runs[case.kind], folder)
    case.damage(folder)
    before = snapshot(folder)
    paths = {name: str(path) for name, path in runs.items()} | {"out": str(UNWRITABLE), "run": str(folder)}
    outcome = run(capsys, *(part.format(**paths) for part in case.command))
    assert_user_error(outcome, case.words)
    assert snapshot(folder) == before


def test_an_export_older_than_its_optional_keys_still_loads(runs, tmp_path, capsys):
    """Dense exports before `pretrained` was written load as pretrained: the check must not refuse them
    (the export under test is of a pretrained backbone, as those were)."""
    folder = tmp_path / "run"
    shutil.copytree(runs["dense"], folder)
    edit_json("model.json", lambda info: info.pop("pretrained"))(folder)
    outcome = run(capsys, "predict", folder, runs["photo"])
    assert outcome.code == 0, outcome.err
    assert "000.png" in outcome.out


def test_dense_predict_never_writes_into_the_users_own_folder(runs, tmp_path, capsys):
    """Its --output is a folder (predictions.json, masks/, drawn/): a folder of the user's files is refused."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "predictions.json").write_text('{"mine": true}\n')
    before = snapshot(mine)
    assert_user_error(run(capsys, "predict", runs["dense"], runs["photo"], "--output", mine),
                      [str(mine), "did not write", "predictions.json"])
    assert snapshot(mine) == before
    assert run(capsys, "predict", runs["dense"], runs["photo"], "--output", tmp_path / "new").code == 0
    assert run(capsys, "predict", runs["dense"], runs["photo"], "--output", tmp_path / "new").code == 0  # ours: again
