"""fit(): learns, keeps the best epoch, exports what timm loads, and resumes exactly."""

from __future__ import annotations

import json
import os

import pytest
import timm
import torch
from safetensors.torch import load_file

import tunewise
from tunewise import DataConfig, TrainConfig
from tunewise.errors import ConfigError, TunewiseError

FAST = TrainConfig(epochs=3, batch_size=8, num_workers=0, lr=3e-3, patience=None)


def _data(folder) -> DataConfig:
    return DataConfig(data=str(folder), image_size=32)


def test_linear_probe_learns_on_cached_features_and_writes_its_run(image_folder, tiny_weights, tmp_path):
    record = tunewise.fit("timm:test_resnet", _data(image_folder), "linear_probe", train=FAST,
                          weights=tiny_weights, out=tmp_path / "run", epochs=8, lr=0.05)
    assert record.cached_features
    assert record.val["accuracy"] > 0.8  # colours are separable; chance is 1/3
    width = tunewise.load_backbone("timm:test_resnet", pretrained=False).num_features
    assert record.trainable_params == 3 * width + 3  # the head alone: features -> 3 classes
    run = tmp_path / "run"
    for name in ("settings.json", "metrics.jsonl", "record.json", "model.safetensors", "model.json"):
        assert (run / name).is_file(), name
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(8))
    assert tunewise.RunRecord.load(run / "record.json") == record


def test_features_are_cached_once_per_split(image_folder, tiny_weights, tmp_path):
    cache = tmp_path / "cache"
    train = TrainConfig(epochs=1, num_workers=0, cache_dir=str(cache))
    tunewise.fit("timm:test_resnet", _data(image_folder), train=train, weights=tiny_weights, out=tmp_path / "a")
    files = sorted(cache.glob("*.safetensors"))  # not their lock files
    assert len(files) == 3  # train, val, test
    mtimes = [f.stat().st_mtime_ns for f in files]
    tunewise.fit("timm:test_resnet", _data(image_folder), train=train, weights=tiny_weights, out=tmp_path / "b")
    assert [f.stat().st_mtime_ns for f in sorted(cache.glob("*.safetensors"))] == mtimes  # read, not rewritten


def test_export_loads_in_timm_and_predicts_like_tunewise(image_folder, tiny_weights, tmp_path):
    record = tunewise.fit("timm:test_resnet", _data(image_folder), "full", train=FAST,
                          weights=tiny_weights, out=tmp_path / "run")
    model = timm.create_model("test_resnet", num_classes=3)
    model.load_state_dict(load_file(str(tmp_path / "run" / "model.safetensors")))  # strict
    rows = tunewise.predict(record.run_dir, [image_folder / "red"])
    recorded = json.loads((tmp_path / "run" / "model.json").read_text())["preprocess"]
    assert recorded["input_size"] == 32
    transform = tunewise.backbones.Preprocess(**{k: tuple(v) if isinstance(v, list) else v
                                                 for k, v in recorded.items()}).eval_transform()
    x = torch.stack([transform(image) for image in _images(image_folder / "red")])
    with torch.no_grad():
        probabilities = model.eval()(x).softmax(1)
    assert len(rows) == 12
    for row, p in zip(rows, probabilities, strict=True):
        assert row["label"] == ["blue", "green", "red"][int(p.argmax())]  # sorted folder names
        assert abs(row["probability"] - float(p.max())) < 1e-5

    readme = (tmp_path / "run" / "README.md").read_text()  # states the size it was tuned at, and its snippet runs
    assert "Tuned at **32 x 32 px**" in readme
    snippet = readme.split("```python\n")[1].split("```")[0]
    namespace: dict = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path / "run")
        exec(snippet, namespace)
    with torch.no_grad():
        assert torch.equal(namespace["model"](x), model(x))


def _images(folder):
    from PIL import Image

    return [Image.open(p).convert("RGB") for p in sorted(folder.iterdir())]


def test_scratch_starts_from_random_weights(image_folder, tiny_weights, tmp_path):
    record = tunewise.fit("timm:test_resnet", _data(image_folder), "scratch", train=FAST, out=tmp_path / "s")
    assert not record.cached_features
    assert record.trainable_params == record.total_params


def test_frozen_batchnorm_statistics_do_not_move(image_folder, tiny_weights, tmp_path):
    record = tunewise.fit("timm:test_resnet", _data(image_folder), "linear_probe", train=FAST,
                          weights=tiny_weights, out=tmp_path / "run")
    exported = load_file(str(tmp_path / "run" / "model.safetensors"))
    original = load_file(str(tiny_weights))
    running = [k for k in original if "running_mean" in k or "running_var" in k]
    assert running and all(torch.equal(exported[k], original[k]) for k in running)
    assert record.best_epoch >= 0


@pytest.mark.parametrize("strategy", ["full", "gradual_unfreeze"])
def test_killed_run_resumes_to_the_same_weights(strategy, image_folder, tiny_weights, tmp_path, monkeypatch):
    """With augmentation and a schedule: an interrupted run plus resume equals one straight run."""
    train = TrainConfig(epochs=4, batch_size=8, num_workers=0, lr=1e-3, patience=None)
    tunewise.fit("timm:test_resnet", _data(image_folder), strategy, train=train, weights=tiny_weights,
                 out=tmp_path / "straight")

    import tunewise.train as loop

    real_save = loop._save_checkpoint

    def save_then_die(run_dir, accelerator, model, optimizer, progress):
        real_save(run_dir, accelerator, model, optimizer, progress)
        if progress.epoch == 2:
            raise KeyboardInterrupt  # as if killed right after epoch 2's checkpoint

    monkeypatch.setattr(loop, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        tunewise.fit("timm:test_resnet", _data(image_folder), strategy, train=train, weights=tiny_weights,
                     out=tmp_path / "killed")
    monkeypatch.setattr(loop, "_save_checkpoint", real_save)
    resumed = tunewise.resume(tmp_path / "killed")

    assert resumed.epochs_run == 4
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) == 4


def test_resume_refuses_other_settings_and_existing_runs_are_not_overwritten(image_folder, tiny_weights, tmp_path):
    train = TrainConfig(epochs=1, num_workers=0)
    tunewise.fit("timm:test_resnet", _data(image_folder), train=train, weights=tiny_weights, out=tmp_path / "r")
    with pytest.raises(TunewiseError, match="already holds a run"):
        tunewise.fit("timm:test_resnet", _data(image_folder), train=train, weights=tiny_weights, out=tmp_path / "r")
    with pytest.raises(TunewiseError, match="strategy differ"):
        tunewise.fit("timm:test_resnet", _data(image_folder), "full", train=train, weights=tiny_weights,
                     out=tmp_path / "r", resume=True)


def test_every_bad_setting_is_reported_at_once(image_folder):
    with pytest.raises(ConfigError) as caught:
        tunewise.fit("timm:test_resnet", str(image_folder), epochs=0, batch_size=-2, lr=-1.0)
    message = str(caught.value)
    assert "--epochs" in message and "--batch-size" in message and "--lr" in message


def test_lora_run_exports_merged_weights_that_timm_loads(image_folder, tmp_path):
    from safetensors.torch import save_file

    from tunewise.strategies import get_strategy

    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_vit").state_dict().items()}, str(weights))
    record = tunewise.fit("timm:test_vit", _data(image_folder), get_strategy("lora", r=2), train=FAST,
                          out=tmp_path / "run", weights=weights)
    assert record.strategy_knobs["r"] == 2
    assert 0 < record.trainable_params < record.total_params  # adapters and head, counted before the merge
    model = timm.create_model("test_vit", num_classes=3)
    model.load_state_dict(load_file(str(tmp_path / "run" / "model.safetensors")))  # plain names, strict


def test_loader_workers_default_to_none_on_two_cores_without_a_gpu(monkeypatch):
    """On 2 cores without a GPU a loader worker decodes on a core training computes on: none by default
    there, 2 elsewhere; a number given is kept."""
    from tunewise.epochs import loader_workers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for cores, workers in ((1, 0), (2, 0), (3, 2), (16, 2)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cores=cores: set(range(cores)), raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert loader_workers(TrainConfig()) == workers
    assert loader_workers(TrainConfig(num_workers=3)) == 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert loader_workers(TrainConfig()) == 2
