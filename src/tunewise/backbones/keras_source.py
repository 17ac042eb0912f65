"""`keras:PATH.keras`: a saved Keras 3 image model, fine-tuned by tunewise on Keras's torch backend.

On the torch backend a Keras model is a `torch.nn.Module` whose weights are torch Parameters, so
every strategy, the feature cache, search and ranking work on it unchanged; the fit exports a
`.keras` file (tunewise.export) that Keras loads on any backend. The features are the input of the
model's last Dense layer (`keras:model.keras#LAYER` names another layer, whose output must be
pooled: (batch, features)); that Dense layer is the source head. Images reach the model as Keras
models take them: channels last, scaled to [0, 1] (`#LAYER@255` or `keras:model.keras@255` feeds
0-255 instead), at the model's own input size.

`lora` uses Keras's own LoRA (`enable_lora`), merged into the kernels before export; dora, ia3 and
vera (peft adapters on torch layers) are refused.

`keras:FOLDER` (a Hugging Face BERT-type folder, which KerasHub converts offline) and `keras:PRESET` (a
KerasHub BERT preset) are text encoders: keras_text.py. A timm image folder and a KerasHub image classifier
preset are converted by KerasHub into a model this file's KerasImages trains: keras_hub_images.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunewise.backbones import SOURCES
from tunewise.backbones.base import Backbone, Preprocess
from tunewise.errors import BackboneError, ConfigError, one_line

log = logging.getLogger("tunewise")


def keras_on_torch() -> Any:
    """Keras, imported with the torch backend (the user's KERAS_BACKEND is kept when it says torch).

    Raises:
        BackboneError: KERAS_BACKEND names another backend, Keras was imported with another one
            already, or Keras is not installed.
    """
    backend = os.environ.get("KERAS_BACKEND")
    if backend not in (None, "torch"):
        raise BackboneError(f"KERAS_BACKEND is {backend!r}; tunewise trains Keras models on the torch backend. "
                            "Unset it, or set KERAS_BACKEND=torch, for tunewise (the exported .keras file loads "
                            "on any backend).")
    os.environ["KERAS_BACKEND"] = "torch"  # read once, when Keras is imported; not left for child processes
    try:
        import keras
    except ImportError:
        raise BackboneError("keras: models need Keras 3: pip install 'tunewise[keras]'.") from None
    finally:
        if backend is None:
            del os.environ["KERAS_BACKEND"]
    if keras.backend.backend() != "torch":
        raise BackboneError(f"Keras was imported with the {keras.backend.backend()} backend before tunewise; "
                            "start Python with KERAS_BACKEND=torch.")
    return keras


class KerasImages(nn.Module):
    """A Keras model's feature part on tunewise's images: (B, 3, H, W) in [0, 1] -> (B, features).

    Its BatchNormalization layers follow tunewise's policy (`set_norm_statistics`, which
    tunewise's `set_train_mode` calls): a layer whose scale and offset do not train keeps its moving
    statistics while the rest trains (Keras itself would re-estimate them)."""

    def __init__(self, features: Any, scale: float, inputs: str | None = None, multiple: int = 1) -> None:
        """`features`: a Keras model, images (B, H, W, 3) -> (B, features); `scale`: what tunewise's [0, 1]
        images are multiplied by; `inputs`: what the model takes, for the export's README (by default RGB
        scaled to [0, `scale`]); `multiple`: image sides must be multiples of it (a TensorFlow-padded port,
        keras_hub_images.py, computes its own function at those sizes only)."""
        super().__init__()
        layers = leaf_layers(features)
        frozen = [layer.name for layer in layers if layer.weights and not layer.trainable]
        if frozen:  # which weights train is the strategy's choice, not the flags the model was saved with
            log.info("keras: %d layers saved with trainable=False (%s) are trainable again; the strategy decides",
                     len(frozen), ", ".join(frozen[:5]) + (", ..." if len(frozen) > 5 else ""))
            features.trainable = True
        self.net = features
        track_weights(features)
        self.scale = scale
        self.inputs = inputs or ("RGB, channels last, in [0, 1]" if scale == 1 else
                                 f"RGB, channels last, in [0, {scale:g}]")
        self.multiple = multiple
        self.updates: dict[str, bool] = {}
        """BatchNormalization layer name -> whether training re-estimates its statistics."""
        for layer in layers:
            if type(layer).__name__ == "BatchNormalization":
                layer.call = self._statistics_when_training(layer, layer.call)
        generator = keras_on_torch().random.SeedGenerator
        self.seeded = [value.state for layer in layers for value in vars(layer).values()
                       if isinstance(value, generator)]
        """The states of the layers' Keras seed generators (Dropout made with seed=, GaussianNoise,
        SpatialDropout, RandomFlip, ...), which checkpoints do not hold; only an unseeded Dropout draws
        from torch's generator instead."""

    def set_norm_statistics(self, updates: Any) -> None:
        """`updates(params)`: whether a BatchNormalization layer with these trainable weights
        re-estimates its moving statistics in training; one without scale and offset follows the model."""
        self.updates = {layer.name: updates([w.value for w in layer.trainable_weights] or list(self.parameters()))
                        for layer in leaf_layers(self.net) if type(layer).__name__ == "BatchNormalization"}

    def _statistics_when_training(self, layer: Any, call: Any) -> Any:
        def batch_norm(inputs: Any, training: Any = None, mask: Any = None) -> Any:
            return call(inputs, training=bool(training) and self.updates.get(layer.name, True), mask=mask)

        return batch_norm

    native_file = "model.keras"
    """What tunewise.export writes beside the safetensors export: the file a Keras user loads."""

    @property
    def usage(self) -> str:
        """How the export's README says to load model.keras (after `import keras_hub` when it holds KerasHub's
        own layers, which Keras finds only once KerasHub registered them)."""
        hub = any(type(layer).__module__.startswith("keras_hub") for layer in leaf_layers(self.net))
        return ('import keras  # any backend: KERAS_BACKEND=tensorflow, torch or jax\n'
                + ('import keras_hub  # registers the KerasHub layers model.keras holds\n' if hub else '')
                + 'model = keras.saving.load_model("model.keras")\n'
                f'logits = model(images)  # (batch, height, width, 3): {self.inputs}')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.multiple > 1 and (x.shape[-2] % self.multiple or x.shape[-1] % self.multiple):
            raise BackboneError(f"this model takes images whose sides are multiples of {self.multiple} px (a "
                                "TensorFlow-padded timm model: KerasHub's layers pad it as TensorFlow does at "
                                f"those sizes only); it was given {x.shape[-2]} x {x.shape[-1]} px. Pass "
                                f"--image-size {self.multiple * max(1, round(x.shape[-1] / self.multiple))}.")
        if self.training:  # random layers draw from torch's generator too: tunewise seeds it per epoch (resume)
            for state in self.seeded:
                state.assign(torch.randint(2**31 - 1, tuple(state.shape), dtype=torch.int32))
        # channels last, contiguous: Keras's convolutions ran 1.8x slower in inference on a permuted view
        x = x.permute(0, 2, 3, 1).contiguous()
        return self.net(x * self.scale if self.scale != 1 else x, training=self.training)

    def norm_parameters(self) -> list[nn.Parameter]:
        """The trainable weights (scale and offset) of the Keras normalization layers, for norm_only."""
        return [w.value for layer in leaf_layers(self.net) if type(layer).__name__.endswith("Normalization")
                for w in layer.trainable_weights]

    def add_lora(self, r: int, alpha: float, targets: tuple[str, ...] | None) -> None:
        """Keras's own LoRA (`layer.enable_lora`) on the Dense, EinsumDense and ungrouped convolution
        layers (or those `targets` names); only the adapters train.

        Raises:
            ConfigError: a target that names no such layer, or a model with none.
        """
        enable_lora(self, self.lora_layers(targets), r, alpha)

    def lora_layers(self, targets: tuple[str, ...] | None) -> list[Any]:
        """The layers `add_lora` adapts, changing nothing (a search checks them before its first trial)."""
        return lora_layers(self.net, targets)

    def merge_lora(self) -> None:
        """Fold every adapter into its kernel and drop it: the model is plain Keras layers again, with
        the weights a fresh load of it expects."""
        merge_lora(self.net, leaf_layers(self.net))

    def save_with_head(self, head: nn.Module, path: str | Path) -> None:
        """The fine-tuned feature model with `head` (a Linear) as its new last Dense layer, saved as one
        Keras file at `path` (any name: Keras writes it as `path`.keras, moved to `path`)."""
        save_with_head(self.net.inputs, self.net.outputs[0], head, path)


def enable_lora(module: nn.Module, layers: list[Any], r: int, alpha: float) -> None:
    """Keras's LoRA on `layers` of `module.net`; only the adapters of `module` train."""
    for layer in layers:
        layer.enable_lora(r, lora_alpha=alpha)
    track_weights(module.net)  # the adapters become torch Parameters of the model
    for name, param in module.named_parameters():
        param.requires_grad_("/lora_kernel_" in name)


def merge_lora(net: Any, layers: Any) -> None:
    """Fold the adapter of every one of `layers` (of `net`) that has one into its kernel and drop it."""
    for layer in layers:
        if getattr(layer, "lora_enabled", False):
            merged = layer.kernel.detach().clone()  # the kernel plus alpha / r * A @ B
            layer.lora_enabled, layer.lora_rank, layer.lora_alpha = False, None, None
            del layer.lora_kernel_a, layer.lora_kernel_b
            layer._kernel.assign(merged)
            layer._kernel.trainable = True
    track_weights(net)


def save_with_head(inputs: Any, features: Any, head: nn.Module, path: str | Path) -> None:
    """The Keras graph from `inputs` to `features` with `head` (a Linear) on them as a Dense layer, saved as
    one Keras file at `path` (any name: Keras writes it as `path`.keras, moved to `path`)."""
    keras = keras_on_torch()
    assert isinstance(head, nn.Linear), "a keras: backbone's head is a Linear"
    dense = keras.layers.Dense(head.out_features, name="tunewise_head")
    model = keras.Model(inputs, dense(features))
    with torch.no_grad():
        dense.kernel.value.copy_(head.weight.detach().T)
        dense.bias.value.copy_(head.bias.detach())
    model.save(f"{path}.keras")  # Keras insists on the suffix
    os.replace(f"{path}.keras", path)


def leaf_layers(layer: Any) -> list[Any]:
    """The Keras layers inside `layer` that hold no other layer, input to output, walking into nested
    models (`Model(inputs, Dense(base(inputs)))`, the usual shape of a Keras transfer-learning model)."""
    inner = layer._layers  # Keras's own list of sub-layers, in order (its _flatten_layers reverses nested ones)
    return [leaf for sub in inner for leaf in leaf_layers(sub)] if inner else [layer]


def track_weights(net: Any) -> None:
    """`net`'s floating-point Keras variables as its torch Parameters (Keras's own tracking also lists the
    integer states of dropout's seed generators, which no strategy could train)."""
    net._torch_params = nn.ParameterDict({v.path: v.value for v in net.variables if v.value.is_floating_point()})


def split_name(model_name: str) -> tuple[Path, str | None, float]:
    """`path.keras[#layer][@255]` -> (path, feature layer or None, input scale)."""
    rest, _, scale = model_name.partition("@")
    path, _, layer = rest.partition("#")
    try:
        return Path(path), layer or None, float(scale) if scale else 1.0
    except ValueError:
        raise BackboneError(f"keras:{model_name}: the scale after @ must be a number (255 for 0-255 "
                            "inputs).") from None


def feature_layer(model: Any, name: str | None) -> tuple[Any, Any]:
    """The symbolic features and the source head (the last Dense layer, or None)."""
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    head = dense[-1] if dense else None
    if name is not None:
        try:
            features = model.get_layer(name).output
        except ValueError:
            names = ", ".join(layer.name for layer in model.layers)
            inside = [outer.name for outer in model.layers if outer._layers and name in
                      {layer.name for layer in leaf_layers(outer)}]
            where = (f" {name!r} is inside the nested model {inside[0]!r}, whose output is keras:PATH.keras#"
                     f"{inside[0]}." if inside else "")
            raise BackboneError(f"the Keras model has no layer {name!r} of its own; its layers: {names}."
                                f"{where}") from None
        return features, head if head is not None and head.input is features else None  # a head on these only
    if head is None:
        raise BackboneError("the Keras model has no Dense layer whose input could be the features. Name the "
                            "feature layer: keras:PATH.keras#LAYER (a layer whose output is (batch, features)).")
    log.info("keras: features are the input of the last Dense layer, %r", head.name)
    return head.input, head


def as_linear(dense: Any) -> nn.Linear:
    """A Keras Dense layer's weights as a torch Linear (its kernel is (in, out))."""
    kernel = dense.kernel.value.detach()
    linear = nn.Linear(kernel.shape[0], kernel.shape[1], bias=dense.use_bias)
    with torch.no_grad():
        linear.weight.copy_(kernel.T)
        if dense.use_bias:
            linear.bias.copy_(dense.bias.value.detach())
    return linear


def lora_layers(model: Any, targets: tuple[str, ...] | None) -> list[Any]:
    """The layers Keras's LoRA adapts: Dense, EinsumDense and convolutions with groups == 1, or those
    of them that `targets` names."""
    candidates = [layer for layer in leaf_layers(model) if hasattr(layer, "enable_lora") and
                  getattr(layer, "groups", 1) == 1 and getattr(layer, "kernel_constraint", None) is None]
    if not candidates:
        raise ConfigError("this Keras model has no Dense, EinsumDense or convolution layer that LoRA can adapt.")
    if targets is None:
        return candidates
    names = (targets,) if isinstance(targets, str) else tuple(targets)
    missing = sorted(set(names) - {layer.name for layer in candidates})
    if missing:
        raise ConfigError(f"LoRA target_modules {missing} name no layer it can adapt in this Keras model. Those "
                          f"it can: {', '.join(layer.name for layer in candidates)}.")
    return [layer for layer in candidates if layer.name in names]


def layer_groups(module: KerasImages, key: Callable[[str], str] | None = None) -> list[list[str]]:
    """Parameter names by Keras layer, input to output; with `key` (layer name -> group name), by runs of
    consecutive layers of the same group (a KerasHub EfficientNet's stages, as timm groups them)."""
    names = {id(p): n for n, p in module.named_parameters()}
    groups: list[list[str]] = []
    last = None
    for layer in leaf_layers(module.net):
        own = [names[id(w.value)] for w in layer.weights if id(w.value) in names]
        group = layer.name if key is None else key(layer.name)
        if own and group == last:
            groups[-1] += own
        elif own:
            groups.append(own)
            last = group
    return groups


@SOURCES.register("keras")
def load(model_name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """A saved Keras model's features, head and input pipeline (`keras:PATH.keras[#LAYER][@SCALE]`), or a
    folder or KerasHub preset (`keras:FOLDER`, `keras:PRESET`: keras_text.py, which hands images on to
    keras_hub_images.py)."""
    given = Path(model_name)
    older = given.suffix.lower() in (".h5", ".hdf5") or (given / "saved_model.pb").is_file()  # Keras 2, TF formats
    if not older and (given.is_dir() or split_name(model_name)[0].suffix != ".keras"):  # text: keras_text.py
        from tunewise.backbones.keras_text import load_text

        return load_text(model_name, pretrained, weights)
    keras = keras_on_torch()
    path, layer_name, scale = split_name(model_name)
    if weights is not None:
        raise BackboneError("--weights does not apply to keras: models; the .keras file holds its weights.")
    if path.suffix != ".keras" or not path.is_file():
        raise BackboneError(f"keras:{model_name}: {str(path)!r} is not a .keras file. Save the model with "
                            "model.save('model.keras') (Keras 3) and pass keras:model.keras.")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # any reader failure: a file Keras cannot load
        raise BackboneError(f"Keras cannot load {str(path)!r}: {one_line(err)}") from None
    if not pretrained:
        model = keras.models.clone_model(model)  # the same layers, newly initialised
    features, head = feature_layer(model, layer_name)
    if len(features.shape) != 2:
        raise BackboneError(f"the features of {str(path)!r} have shape {tuple(features.shape)}; tunewise needs "
                            "(batch, features). Name a pooled layer: keras:PATH.keras#LAYER.")
    shape = model.inputs[0].shape  # (batch, H, W, C)
    if len(shape) != 4 or shape[-1] != 3:
        raise BackboneError(f"{str(path)!r} takes inputs of shape {tuple(shape)}; keras: models take RGB images "
                            "(batch, height, width, 3), channels last.")
    size = shape[1] or 224
    module = KerasImages(keras.Model(model.inputs, features), scale)
    return Backbone(name=f"keras:{model_name}", arch=f"keras:{model_name}", model=module,
                    num_features=int(features.shape[-1]), layer_groups=layer_groups(module),
                    preprocess=Preprocess(input_size=size, resize_size=size, mean=(0.0, 0.0, 0.0),
                                          std=(1.0, 1.0, 1.0)),
                    source_head=as_linear(head) if head is not None and pretrained else None, pretrained=pretrained)
