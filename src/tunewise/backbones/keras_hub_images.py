"""`keras:FOLDER` and `keras:PRESET` for images: a timm folder or a KerasHub image classifier preset, turned
into a Keras model by KerasHub and fine-tuned on Keras's torch backend as a saved .keras image model is
(keras_source.KerasImages).

A timm folder (config.json with `architecture`, the weights in model.safetensors: what timm's
`push_to_hf_hub` writes, or `timm.models.save_for_hf(model, folder, safe_serialization=True)`) is converted
offline by KerasHub's timm converter (`ImageClassifier.from_preset(FOLDER)`), which knows EfficientNet,
ResNet, MobileNet, DenseNet, VGG, CSPNet and HGNetV2. Not all of its conversions are faithful, so timm builds
the same folder and a conversion whose features differ from timm's is refused: EfficientNet-Lite0 and B0
and ResNet-18 pass (4e-6, 6e-8 and 9e-6 max abs difference), DenseNet-121 does not (0.6 on features
reaching 42), and KerasHub fails to convert MobileNetV3-Small.

timm's `tf_` models (weights ported from TensorFlow, such as tf_efficientnet_lite0, the weights of
pkg:efficientnet_lite0) differ from their PyTorch twins in two details KerasHub does not know (it refuses
the `tf_` names): TensorFlow's BatchNormalization epsilon (1e-3, not 1e-5) and its "same" padding, which
pads a stride-2 convolution one pixel more at the bottom and right. tunewise converts such a folder as the
twin and sets both on the layers, as keras_text.py puts BERT's exact GELU back: the features then equal
timm's tf_ model (4e-6), at image sides that are multiples of 32 (elsewhere TensorFlow pads otherwise, so
other sizes are refused). EfficientNet only: the other tf_ ports are untried.

A KerasHub preset (a built-in ImageClassifier preset name, downloaded from Kaggle, or a folder written by
`save_to_preset`) loads as KerasHub saved it. Either way the KerasHub model is rebuilt as a plain Keras model
(the backbone's layers, then the classifier's pooling: the features; its last Dense is the source head), so
model.keras keeps the layers as tunewise set and trained them. The images come from tunewise's pipeline,
made as the timm pretrained_cfg says (resize to size / crop_pct, centre crop, mean and std) or, for a preset,
as its image converter does (resize to size; its scale and offset as mean and std). Layer groups are the
runs of layers sharing a name prefix: an EfficientNet's stem, block1 ... block7 (stages, as timm groups
them) and top; a ResNet's stem and stacks; a CSPNet's stem and stages.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunewise.backbones.base import Backbone, Preprocess
from tunewise.backbones.keras_source import KerasImages, as_linear, keras_on_torch, layer_groups, leaf_layers
from tunewise.backbones.keras_text import download_preset, presets, read_json, without_tensorflow
from tunewise.backbones.timm_source import preprocess_of
from tunewise.errors import BackboneError, one_line

log = logging.getLogger("tunewise")

TIMM_CONVERTERS = ("efficientnet", "resnet", "mobilenet", "densenet", "vgg", "csp", "dark", "hgnetv2")
"""How the timm architectures that KerasHub 0.32 converts begin (keras_hub/src/utils/timm/preset_loader.py)."""
TF_PORTS = ("efficientnet",)
"""The `tf_` timm architectures tunewise converts as their PyTorch twin plus TensorFlow's padding and epsilon."""
TF_EPSILON = 1e-3
"""TensorFlow's BatchNormalization epsilon, which timm's tf_ models keep (timm's BN_EPS_TF_DEFAULT)."""


def is_image_model(keras_hub: Any, model_name: str) -> bool:
    """Whether `keras:model_name` is a timm folder, a KerasHub preset folder with an image converter, or the
    name of a KerasHub image classifier preset (the rest is keras_text's)."""
    path = Path(model_name)
    if path.is_dir():
        config = _peek(path / "config.json")
        return "architecture" in config or ("registered_name" in config and (path / "image_converter.json").is_file())
    return model_name in presets(keras_hub.models.ImageClassifier)


def load_images(keras_hub: Any, model_name: str, pretrained: bool, weights: str | Path | None) -> Backbone:
    """A timm folder, a KerasHub preset folder or a KerasHub image classifier preset name, as a Keras image
    backbone.

    Raises:
        BackboneError: --weights given, an architecture KerasHub cannot convert, weights it cannot read, or a
            preset to download without a network.
    """
    if weights is not None:
        raise BackboneError("--weights does not apply to keras: folders and presets; they hold their weights.")
    path = Path(model_name)
    if not path.is_dir():
        handle = presets(keras_hub.models.ImageClassifier)[model_name]
        folder = download_preset(model_name, handle, offline="a timm folder (keras:FOLDER)")
        return _from_preset(keras_hub, folder, model_name, pretrained)
    config = read_json(path / "config.json")
    if "architecture" in config:
        return _from_timm_folder(keras_hub, path, config, model_name, pretrained)
    return _from_preset(keras_hub, path, model_name, pretrained)


def _peek(path: Path) -> dict:
    """config.json's object, or {} when there is none to read (the text loader then says what is wrong)."""
    try:
        config = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _from_timm_folder(keras_hub: Any, path: Path, config: dict, model_name: str, pretrained: bool) -> Backbone:
    """Refuse early what KerasHub cannot convert (naming what it can), convert the rest (a tf_ port as its
    twin, then made TensorFlow's), and check the pretrained result against timm."""
    arch = str(config["architecture"])
    twin = arch.removeprefix("tf_")
    if not twin.startswith(TIMM_CONVERTERS):
        raise BackboneError(f"{str(path)!r} holds a timm {arch!r}; KerasHub converts timm models whose architecture "
                            f"begins {', '.join(TIMM_CONVERTERS)}. Load it with timm:{arch} --weights "
                            f"{path / 'model.safetensors'}.")
    if twin != arch and not twin.startswith(TF_PORTS):
        raise BackboneError(f"{str(path)!r} holds {arch!r}, a port of TensorFlow weights; KerasHub converts the "
                            f"PyTorch {twin!r} only, and tunewise makes it pad and normalize as TensorFlow does for "
                            f"{', '.join(TF_PORTS)} ports only. Load it with timm:{arch} --weights "
                            f"{path / 'model.safetensors'}.")
    if pretrained and not (path / "model.safetensors").is_file():
        raise BackboneError(f"{str(path)!r} has no model.safetensors; KerasHub converts safetensors weights only. Save "
                            "the model with timm.models.save_for_hf(model, folder, safe_serialization=True).")
    has_head = pretrained and int(config.get("num_classes") or 0) > 0
    with _as_architecture(path, config, twin) as folder:
        classifier = _classifier(keras_hub, folder, pretrained, has_head, str(path))
    multiple = _pad_as_tensorflow(classifier.backbone, arch) if twin != arch else 1
    from timm.data import resolve_data_config

    preprocess = preprocess_of(resolve_data_config({}, pretrained_cfg=config.get("pretrained_cfg") or {}))
    backbone = _backbone(classifier, model_name, preprocess, pretrained, has_head, multiple)
    if pretrained:
        _check_against_timm(backbone.model, path, arch, multiple)
    return backbone


@contextmanager
def _as_architecture(path: Path, config: dict, arch: str) -> Iterator[Path]:
    """The timm folder, or (for a tf_ port) a copy of it whose config.json names its PyTorch twin, the
    architecture KerasHub converts; the weights file is linked, not copied, where the system allows it."""
    if config["architecture"] == arch:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="tunewise-timm-") as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps({**config, "architecture": arch}))
        weights = path / "model.safetensors"
        if weights.is_file():
            try:
                (Path(tmp) / weights.name).symlink_to(weights.resolve())
            except OSError:  # no symbolic links here (Windows without the privilege)
                shutil.copyfile(weights, Path(tmp) / weights.name)
        yield Path(tmp)


def _classifier(keras_hub: Any, preset: str | Path, pretrained: bool, has_head: bool, shown: str) -> Any:
    """KerasHub's ImageClassifier of the folder or preset: its own head when `has_head`, else a 1-class one
    (unused) on the backbone, since the pooling tunewise keeps is the classifier's."""
    try:
        with without_tensorflow():
            return keras_hub.models.ImageClassifier.from_preset(str(preset), load_weights=pretrained,
                                                                **({} if has_head else {"num_classes": 1}))
    except Exception as err:  # any reader or converter failure: a folder or preset KerasHub cannot load
        raise BackboneError(f"KerasHub cannot convert {shown!r} into an image classifier: {one_line(err)}") from None


def _pad_as_tensorflow(backbone: Any, arch: str) -> int:
    """Make a converted EfficientNet compute timm's tf_ model: TensorFlow's BatchNormalization epsilon on every
    such layer, and TensorFlow's "same" padding on each strided convolution (set on the ZeroPadding2D layer
    before it, so model.keras keeps it). That padding is TensorFlow's only where each strided convolution gets
    an even side.

    Returns:
        The multiple that image sides must be of (the product of the strides).

    Raises:
        BackboneError: a strided convolution that pads by itself or inside a composite block.
    """
    multiple = 1
    for layer in leaf_layers(backbone):
        if type(layer).__name__ == "BatchNormalization":
            layer.epsilon = TF_EPSILON
        strides = tuple(getattr(layer, "strides", None) or (1,))
        if not hasattr(layer, "kernel_size") or max(strides) == 1:
            continue
        try:
            source = layer.input._keras_history.operation  # the layer whose output it convolves
        except (AttributeError, ValueError):  # a convolution inside a composite block: not in the graph
            source = None
        if type(source).__name__ != "ZeroPadding2D" or layer.padding != "valid":
            raise BackboneError(f"tunewise cannot make KerasHub's {arch!r} pad as TensorFlow does: its strided "
                                f"convolution {layer.name!r} is not padded by a ZeroPadding2D layer of its own. "
                                f"Load it with timm:{arch}.")
        source.padding = tuple(_same(k, s) for k, s in zip(layer.kernel_size, strides, strict=True))
        multiple *= max(strides)
    return multiple


def _check_against_timm(module: Any, path: Path, arch: str, multiple: int) -> None:
    """Refuse a conversion that does not compute timm's features: KerasHub's converters are not all faithful
    (its DenseNet-121 differs from timm's by 0.63 on features reaching 42), so timm builds the same folder and
    both run on two random images (64 px, or the next multiple the model needs).

    Raises:
        BackboneError: the features differ by more than 1e-4 of their scale (EfficientNet-Lite0 and
            ResNet-18 differ by 4e-6 and 9e-6, on features reaching 6 and 25).
    """
    import timm
    import torch

    from tunewise.safe_load import weights_only_loads

    try:
        with weights_only_loads():  # timm reads model.safetensors; a pickle beside it would run nothing
            reference: Any = timm.create_model(f"local-dir:{path}", pretrained=True).eval()  # timm's own methods
    except Exception as err:  # any timm failure: then nothing shows the conversion right
        raise BackboneError(f"timm cannot build {str(path)!r}, against which tunewise checks KerasHub's conversion: "
                            f"{one_line(err)}") from None
    side = multiple * -(-64 // multiple)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    was_training = module.training
    with torch.no_grad():
        theirs = reference.forward_head(reference.forward_features(x), pre_logits=True)
        ours = module.eval()(x)
    module.train(was_training)
    scale = float(theirs.abs().max())
    diff = float((ours - theirs).abs().max()) if ours.shape == theirs.shape else float("inf")
    if not diff <= 1e-4 * max(1.0, scale):
        raise BackboneError(f"KerasHub's conversion of {str(path)!r} ({arch}) does not compute timm's features: they "
                            f"differ by up to {diff:.3g} (timm's reach {scale:.3g}). Load it with timm:{arch} "
                            f"--weights {path / 'model.safetensors'}.")
    log.info("keras: %s converted by KerasHub; its features are within %.1g of timm's", arch, diff)


def _same(kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding (before, after) for a side that is a multiple of the stride: the odd pixel
    goes after."""
    total = max(kernel - stride, 0)
    return total // 2, total - total // 2


def _from_preset(keras_hub: Any, folder: Path, model_name: str, pretrained: bool) -> Backbone:
    has_head = pretrained and (folder / "task.json").is_file()
    classifier = _classifier(keras_hub, str(folder), pretrained, has_head, model_name)
    return _backbone(classifier, model_name, _converter_preprocess(classifier, model_name), pretrained, has_head, 1)


def _converter_preprocess(classifier: Any, model_name: str) -> Preprocess:
    """A KerasHub image converter as tunewise's pipeline: pixels (0-255) * scale + offset is (x - mean) / std
    for x in [0, 1], so std = 1 / (255 scale) and mean = -offset std; it resizes the image (cropped to a
    square) to the size, with no margin to crop."""
    converter = getattr(classifier.preprocessor, "image_converter", None)
    if converter is None:
        raise BackboneError(f"the KerasHub preset {model_name!r} has no image converter (image_converter.json), which "
                            "says what pixels the model takes. Save the classifier with its preprocessor "
                            "(ImageClassifier.save_to_preset).")

    def per_channel(value: Any, default: float) -> tuple[float, float, float]:
        values = [default] * 3 if value is None else [float(v) for v in value] if isinstance(value, (list, tuple)) \
            else [float(value)] * 3
        return values[0], values[1], values[2]

    scale = per_channel(converter.scale, 1.0)
    offset = per_channel(converter.offset, 0.0)
    std = tuple(1 / (255 * s) for s in scale)
    mean = tuple(-o * d for o, d in zip(offset, std, strict=True))
    size = int((converter.image_size or (224, 224))[0])
    interpolation = converter.interpolation if converter.interpolation in ("bilinear", "bicubic", "nearest") \
        else "bilinear"
    return Preprocess(input_size=size, resize_size=size, mean=mean, std=std, interpolation=interpolation)  # type: ignore[arg-type]


def _backbone(classifier: Any, model_name: str, preprocess: Preprocess, pretrained: bool, has_head: bool,
              multiple: int) -> Backbone:
    keras = keras_on_torch()
    features, head = _features(classifier, model_name)
    net = keras.Model(classifier.backbone.inputs, features)  # plain layers: model.keras keeps what tunewise set
    inputs = (f"RGB, channels last, (pixels / 255 - mean) / std with mean {[round(m, 4) for m in preprocess.mean]} "
              f"and std {[round(s, 4) for s in preprocess.std]}"
              + (f"; sides multiples of {multiple} px" if multiple > 1 else ""))
    module = KerasImages(net, 1.0, inputs=inputs, multiple=multiple)
    return Backbone(name=f"keras:{model_name}", arch=f"keras:{model_name}", model=module,
                    num_features=int(features.shape[-1]), layer_groups=layer_groups(module, key=_group),
                    preprocess=preprocess, source_head=as_linear(head) if has_head else None, pretrained=pretrained)


def _features(classifier: Any, model_name: str) -> tuple[Any, Any]:
    """The classifier's layers between its backbone and its last Dense (dropout left out), applied to the
    backbone's own output: the pooled features; and that Dense."""
    layers = classifier.layers
    tail = layers[layers.index(classifier.backbone) + 1:]
    if not tail or type(tail[-1]).__name__ != "Dense":
        raise BackboneError(f"KerasHub's {type(classifier).__name__} ({model_name!r}) does not end in a Dense layer; "
                            "tunewise reads image classifiers whose pooled features feed one (KerasHub's VGG ends "
                            "in a convolutional head). A timm folder loads with timm:ARCHITECTURE --weights "
                            "FOLDER/model.safetensors instead.")
    x = classifier.backbone.output
    try:
        for layer in tail[:-1]:
            if type(layer).__name__ != "Dropout":
                x = layer(x)
    except Exception as err:  # a head that is not one chain of layers
        raise BackboneError(f"KerasHub's {type(classifier).__name__} ({model_name!r}) is not a chain of layers from "
                            f"its backbone to its Dense head: {one_line(err)}") from None
    if len(x.shape) != 2:
        raise BackboneError(f"KerasHub's {type(classifier).__name__} ({model_name!r}) gives its head features of shape "
                            f"{tuple(x.shape)}; tunewise needs pooled ones, (batch, features).")
    return x, tail[-1]


def _group(name: str) -> str:
    """A layer's group: an EfficientNet block's stage (block3b_expand_conv -> block3), a CSPNet's stage
    (stage_2_block_0_... -> stage_2), else the name's first part (stem_conv -> stem, stack1_block0_1_conv ->
    stack1, csp_stem_conv_0 -> csp)."""
    stage = re.match(r"(block\d+)[a-z]+_|(stage_\d+)_", name)
    return (stage.group(1) or stage.group(2)) if stage else name.split("_")[0]
