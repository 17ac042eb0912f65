"""`keras:FOLDER` and `keras:PRESET`: BERT-type text encoders as KerasHub backbones, fine-tuned on Keras's
torch backend. A timm image folder or a KerasHub image preset goes on to keras_hub_images.py.

A Hugging Face folder of a BERT-type encoder (config.json's model_type "bert": BERT, MiniLM, BGE, E5, ...;
its weights in model.safetensors) is converted offline by KerasHub: `keras_hub.models.Backbone.from_preset`
takes a local folder and, finding config.json's `model_type`, ports the safetensors weights into a
`BertBackbone`. Two details KerasHub's BERT fixes are put back to what the folder's config.json says, so
the Keras features equal the transformers model's: the GELU (KerasHub's BERT uses the tanh approximation;
`hidden_act: gelu` is the exact one) and the layer-norm epsilon. The folder's own Hugging Face tokenizer
(transformers.AutoTokenizer) tokenizes, so the text tasks read the model as they read `hf:FOLDER`.

A KerasHub preset (a built-in name such as `bert_tiny_en_uncased`, downloaded from Kaggle when there is a
network, or a local preset folder written by `save_to_preset`) loads the same way; its WordPiece
vocabulary becomes a Hugging Face BertTokenizerFast (KerasHub's own tokenizer runs on TensorFlow Text).

The model is a `KerasText`: inputs {input_ids, attention_mask[, token_type_ids]} -> the pooler's output
(B, H), or the tokens' states (B, T, H) after `use_tokens()`. Layer groups: the embeddings, each
transformer layer, the pooler. `lora` uses Keras's own LoRA on the attention's query and value
projections (as peft does on BERT). The export is a transformers checkpoint (the weights ported back into
a BertModel, checked against the Keras model's outputs) and `model.keras`: the Keras model with the new
head, which Keras loads after `import keras_hub`.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tunewise.backbones.base import Backbone
from tunewise.backbones.hf import DEFAULT_MAX_LENGTH, Tokenize
from tunewise.backbones.keras_source import enable_lora, keras_on_torch, merge_lora, save_with_head, track_weights
from tunewise.errors import BackboneError, ConfigError, one_line
from tunewise.registry import did_you_mean

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

KAGGLE = "https://www.kaggle.com"
INSTALL = "pip install 'tunewise[keras]' && pip install --no-deps keras-hub"
HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": None, "gelu_pytorch_tanh": None, "gelu_fast": None}
"""transformers' hidden_act -> the Keras activation that computes it (None: KerasHub's tanh-approximated GELU)."""
LORA_TARGETS = ("query", "value")
"""The layers Keras's LoRA adapts by default: the attention's query and value projections (peft's BERT default)."""


def keras_hub_on_torch() -> Any:
    """KerasHub, imported after Keras on the torch backend.

    Raises:
        BackboneError: KerasHub is not installed (or Keras is on another backend).
    """
    keras_on_torch()
    try:
        with without_tensorflow():
            import keras_hub
    except ImportError as err:
        raise BackboneError(f"keras: text models need KerasHub ({one_line(err)}): {INSTALL} (without its "
                            "dependencies, which would pull TensorFlow; tunewise needs none of it).") from None
    return keras_hub


@contextmanager
def without_tensorflow() -> Iterator[None]:
    """TensorFlow and TensorFlow Text read as absent while KerasHub is imported, and while it reads a preset:
    KerasHub imports them whenever they are installed (for preprocessing tunewise does not use: it has Hugging
    Face tokenizers and torchvision transforms; and to ask TensorFlow whether a local folder's path is a
    TensorFlow file system's), which cost 2.6 s, 400 MB and TensorFlow's log lines on every keras: load. One
    the user imported already is kept."""
    absent = [name for name in ("tensorflow", "tensorflow_text") if name not in sys.modules]
    for name in absent:
        sys.modules[name] = None  # type: ignore[assignment]  # Python's marker: `import name` raises ImportError
    try:
        yield
    finally:
        for name in absent:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


class KerasText(nn.Module):
    """A KerasHub BERT backbone on tunewise's tokenized text.

    Shape: inputs {input_ids, attention_mask[, token_type_ids]} (B, T) -> (B, H), the pooler's output, when
    `tokens` is False; (B, T, H), each token's last state, when True. Only the floating-point Keras weights
    are torch Parameters (dropout's seed states are not: nothing could train them)."""

    native_file = "model.keras"
    """What tunewise.export writes beside the transformers export: the file a Keras user loads."""

    def __init__(self, backbone: Any, hf_config: Any) -> None:
        super().__init__()
        keras = keras_on_torch()
        self.hf_config = hf_config  # transformers' BertConfig of the same architecture, for the export
        self.tokens = False
        self.graph = (backbone.input, backbone.output)  # KerasHub's BertBackbone: inputs, outputs
        self.net = keras.Model(backbone.input, backbone.output["pooled_output"])
        track_weights(self.net)

    def use_tokens(self) -> None:
        """Token features from now on; the pooler (unused then) leaves the model, as it leaves
        transformers' token and QA models."""
        keras = keras_on_torch()
        self.tokens = True
        inputs, outputs = self.graph
        self.net = keras.Model(inputs, outputs["sequence_output"])
        track_weights(self.net)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        segments = inputs.get("token_type_ids")
        return self.net({"token_ids": ids, "padding_mask": torch.ones_like(ids) if mask is None else mask,
                         "segment_ids": torch.zeros_like(ids) if segments is None else segments},
                        training=self.training)

    def sublayers(self) -> list[Any]:
        """Every Keras layer inside the model, outside in (the attention's projections included)."""
        return list(self.net._flatten_layers(include_self=False))

    def norm_parameters(self) -> list[nn.Parameter]:
        """The scale and offset of the Keras normalization layers, for norm_only."""
        return [w.value for layer in self.sublayers() if type(layer).__name__.endswith("Normalization")
                for w in layer.trainable_weights]

    def add_lora(self, r: int, alpha: float, targets: tuple[str, ...] | None) -> None:
        """Keras's own LoRA (`layer.enable_lora`) on the layers `targets` names (by default the attention's
        query and value projections, in every transformer layer); only the adapters train.

        Raises:
            ConfigError: a target that names no Dense or EinsumDense layer of the model.
        """
        enable_lora(self, self.lora_layers(targets), r, alpha)

    def lora_layers(self, targets: tuple[str, ...] | None) -> list[Any]:
        """The layers `add_lora` adapts, changing nothing (a search checks them before its first trial)."""
        candidates = [layer for layer in self.sublayers() if type(layer).__name__ in ("Dense", "EinsumDense")]
        names = LORA_TARGETS if targets is None else (targets,) if isinstance(targets, str) else tuple(targets)
        missing = sorted(set(names) - {layer.name for layer in candidates})
        if missing:
            known = sorted({layer.name for layer in candidates})
            raise ConfigError(f"LoRA target_modules {missing} name no layer it can adapt in this KerasHub model. "
                              f"Those it can: {', '.join(known)}.")
        return [layer for layer in candidates if layer.name in names]

    def merge_lora(self) -> None:
        """Fold every adapter into its kernel and drop it: plain Keras layers again, whose weights the
        exports take as they are."""
        merge_lora(self.net, self.sublayers())

    def save_with_head(self, head: nn.Module, path: str | Path) -> None:
        """The fine-tuned Keras model with `head` (a Linear) on its features as a Dense layer, saved as one
        Keras file at `path`: inputs {token_ids, segment_ids, padding_mask} -> logits."""
        save_with_head(self.net.input, self.net.output, head, path)

    def transformers_model(self) -> PreTrainedModel:
        """The same encoder as transformers' BertModel: KerasHub's conversion run backwards (tunewise.export
        checks that the two give the same outputs)."""
        from transformers import BertModel

        model = BertModel(self.hf_config, add_pooling_layer=not self.tokens)
        model.load_state_dict(bert_state_dict(self.net))
        return model  # on the CPU: the export moves it where it compares


def bert_state_dict(net: Any) -> dict[str, torch.Tensor]:
    """The weights of a KerasHub BertBackbone's graph under transformers' BertModel names: KerasHub's
    convert_bert backwards (its pooler's only where `net` has it)."""

    def value(variable: Any) -> torch.Tensor:
        return variable.value.detach().cpu()

    def dense(layer: Any, inputs: int = 1) -> dict[str, torch.Tensor]:
        """A Dense or EinsumDense layer as a Linear: its kernel's first `inputs` axes are the inputs."""
        kernel = value(layer.kernel)
        return {"weight": kernel.reshape(int(torch.tensor(kernel.shape[:inputs]).prod()), -1).T,
                "bias": value(layer.bias).flatten()}

    def norm(layer: Any) -> dict[str, torch.Tensor]:
        return {"weight": value(layer.gamma), "bias": value(layer.beta)}

    def under(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{k}": v for k, v in tensors.items()}

    layers = {layer.name: layer for layer in net.layers}
    named = {
        "embeddings.word_embeddings.weight": value(layers["token_embedding"].embeddings),
        "embeddings.position_embeddings.weight": value(layers["position_embedding"].position_embeddings),
        "embeddings.token_type_embeddings.weight": value(layers["segment_embedding"].embeddings),
        **under("embeddings.LayerNorm", norm(layers["embeddings_layer_norm"])),
    }
    if "pooled_dense" in layers:
        named |= under("pooler.dense", dense(layers["pooled_dense"]))
    blocks = sorted((n for n in layers if n.startswith("transformer_layer_")), key=lambda n: int(n.rsplit("_", 1)[1]))
    for i, name in enumerate(blocks):
        block, prefix = layers[name], f"encoder.layer.{i}"
        attention = block._self_attention_layer
        named |= under(f"{prefix}.attention.self.query", dense(attention.query_dense))  # (hidden, heads, size)
        named |= under(f"{prefix}.attention.self.key", dense(attention.key_dense))
        named |= under(f"{prefix}.attention.self.value", dense(attention.value_dense))
        named |= under(f"{prefix}.attention.output.dense", dense(attention.output_dense, 2))  # (heads, size, hidden)
        named |= under(f"{prefix}.attention.output.LayerNorm", norm(block._self_attention_layer_norm))
        named |= under(f"{prefix}.intermediate.dense", dense(block._feedforward_intermediate_dense))
        named |= under(f"{prefix}.output.dense", dense(block._feedforward_output_dense))
        named |= under(f"{prefix}.output.LayerNorm", norm(block._feedforward_layer_norm))
    return {k: v.contiguous() for k, v in named.items()}


def layer_groups(module: KerasText) -> list[list[str]]:
    """The embeddings (and their norm), each transformer layer, then the pooler: parameter names, input
    to output."""
    names = {id(p): n for n, p in module.named_parameters()}
    embeddings: list[str] = []
    groups: list[list[str]] = []
    rest: list[str] = []
    for layer in module.net.layers:
        own = [names[id(w.value)] for w in layer.weights if id(w.value) in names]
        if layer.name.startswith("transformer_layer_"):
            groups.append(own)
        else:
            (rest if groups else embeddings).extend(own)
    return [g for g in (embeddings, *groups, rest) if g]


def faithful_to(backbone: Any, config: Any) -> None:
    """Make KerasHub's BertBackbone compute what the transformers config says: its GELU (KerasHub's BERT
    uses the tanh approximation, `hidden_act: gelu` is the exact one) and its layer-norm epsilon. Set on the
    layers and in their configs, so model.keras keeps them.

    Raises:
        BackboneError: an activation or position embedding KerasHub's BERT cannot compute.
    """
    keras = keras_on_torch()
    act = getattr(config, "hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise BackboneError(f"this BERT model's hidden_act is {act!r}; KerasHub's BERT computes "
                            f"{', '.join(HF_ACTIVATIONS)}. Use hf:FOLDER for it.")
    position = getattr(config, "position_embedding_type", "absolute")
    if position != "absolute":
        raise BackboneError(f"this BERT model's position_embedding_type is {position!r}; KerasHub's BERT has "
                            "absolute position embeddings only. Use hf:FOLDER for it.")
    epsilon = float(getattr(config, "layer_norm_eps", 1e-12))
    backbone.get_layer("embeddings_layer_norm").epsilon = epsilon
    for i in range(backbone.num_layers):
        block = backbone.get_layer(f"transformer_layer_{i}")
        block.layer_norm_epsilon = block._self_attention_layer_norm.epsilon = epsilon
        block._feedforward_layer_norm.epsilon = epsilon
        if HF_ACTIVATIONS[act] is not None:
            block.activation = keras.activations.get(HF_ACTIVATIONS[act])
            block._feedforward_intermediate_dense.activation = block.activation


def load_text(model_name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """A BERT-type encoder from a Hugging Face folder, a KerasHub preset folder or a KerasHub preset name,
    as a KerasHub backbone with a Hugging Face tokenizer.

    Raises:
        BackboneError: KerasHub missing, an unknown name, an architecture other than BERT, weights it
            cannot read, or a preset to download without a network.
    """
    keras_hub = keras_hub_on_torch()
    from tunewise.backbones.keras_hub_images import is_image_model, load_images

    if is_image_model(keras_hub, model_name):  # a timm folder, an image preset: keras_hub_images.py
        return load_images(keras_hub, model_name, pretrained, weights)
    if weights is not None:
        raise BackboneError("--weights does not apply to keras: text models; the folder or preset holds the weights.")
    path = Path(model_name)
    if not path.is_dir() and ("#" in model_name or "@" in model_name):
        raise BackboneError(f"keras:{model_name}: #LAYER and @SCALE (and --keras-feature-layer) name a layer and a "
                            "scale of a .keras image model; a keras: text model's features are its pooler's output "
                            "(its tokens' states for token tasks).")
    if path.is_dir():
        config = read_json(path / "config.json")
        if "model_type" in config:
            return _from_hf_folder(keras_hub, path, config, model_name, pretrained)
        if "registered_name" not in config:
            raise BackboneError(f"{str(path)!r}: its config.json is neither a Hugging Face model's (model_type) nor a "
                                "KerasHub preset's (registered_name).")
        return _from_preset(keras_hub, config, path, model_name, pretrained)
    bert = presets(keras_hub.models.BertBackbone)
    if model_name not in bert:
        other = " It is a KerasHub preset of another kind; tunewise reads its BERT text encoders and image " \
            "classifiers." if model_name in keras_hub.models.Backbone.presets else \
            did_you_mean(model_name, sorted([*bert, *presets(keras_hub.models.ImageClassifier)]))
        raise BackboneError(f"keras:{model_name}: {model_name!r} is not a .keras file, a model folder, or a KerasHub "
                            f"BERT or image classifier preset.{other} Pass a saved Keras image model "
                            "(keras:model.keras), a Hugging Face BERT folder, a timm image folder, a KerasHub preset "
                            "folder, an image classifier preset (keras_hub.models.ImageClassifier.presets), or one "
                            f"of: {', '.join(sorted(bert))}.")
    folder = download_preset(model_name, bert[model_name])
    return _from_preset(keras_hub, read_json(folder / "config.json"), folder, model_name, pretrained)


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise BackboneError(f"{str(path.parent)!r} has no config.json: pass a Hugging Face model folder "
                            "(save_pretrained) or a KerasHub preset folder (save_to_preset).")
    try:
        config = json.loads(path.read_bytes())
    except ValueError as err:
        raise BackboneError(f"{str(path)!r} is not valid JSON: {one_line(err)}") from None
    if not isinstance(config, dict):
        raise BackboneError(f"{str(path)!r} holds no JSON object.")
    return config


def _from_hf_folder(keras_hub: Any, path: Path, config: dict, model_name: str, pretrained: bool) -> Backbone:
    from transformers import AutoConfig, AutoTokenizer

    kind = config.get("model_type")
    if kind != "bert":
        raise BackboneError(f"{str(path)!r} holds a {kind!r} model; keras: converts BERT-type folders (model_type "
                            "'bert': BERT, MiniLM, BGE, E5) through KerasHub. Load it with hf:FOLDER.")
    if pretrained and not any(path.glob("model*.safetensors")):
        raise BackboneError(f"{str(path)!r} has no model.safetensors; KerasHub converts safetensors weights only. "
                            "Save the model with save_pretrained(folder) (safetensors is its default).")
    try:
        hf_config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        with without_tensorflow():
            backbone = keras_hub.models.Backbone.from_preset(str(path), load_weights=pretrained)
    except Exception as err:  # any reader or converter failure: a folder KerasHub cannot convert
        raise BackboneError(f"KerasHub cannot convert {str(path)!r}: {one_line(err)}") from None
    faithful_to(backbone, hf_config)
    return _backbone(backbone, hf_config, tokenizer, model_name, pretrained)


def _from_preset(keras_hub: Any, config: dict, folder: Path, model_name: str, pretrained: bool) -> Backbone:
    if config.get("class_name") != "BertBackbone":
        raise BackboneError(f"the KerasHub preset {model_name!r} is a {config.get('class_name')}; tunewise reads "
                            "BertBackbone presets, and image classifier presets saved with their image converter "
                            "(image_converter.json).")
    tokenizer = _preset_tokenizer(folder, model_name)
    try:
        with without_tensorflow():
            backbone = keras_hub.models.Backbone.from_preset(str(folder), load_weights=pretrained)
    except Exception as err:  # any reader failure
        raise BackboneError(f"KerasHub cannot load the preset {model_name!r}: {one_line(err)}") from None
    from transformers import BertConfig

    hf_config = BertConfig(vocab_size=backbone.vocabulary_size, hidden_size=backbone.hidden_dim,
                           num_hidden_layers=backbone.num_layers, num_attention_heads=backbone.num_heads,
                           intermediate_size=backbone.intermediate_dim, hidden_act="gelu_new",  # KerasHub's GELU
                           max_position_embeddings=backbone.max_sequence_length, type_vocab_size=backbone.num_segments,
                           layer_norm_eps=1e-12, pad_token_id=tokenizer.pad_token_id or 0)
    return _backbone(backbone, hf_config, tokenizer, model_name, pretrained)


def _preset_tokenizer(folder: Path, model_name: str) -> PreTrainedTokenizerBase:
    """A KerasHub BertTokenizer's WordPiece vocabulary and settings as a Hugging Face BertTokenizerFast."""
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]  # transformers 5: an alias, untyped

    spec = read_json(folder / "tokenizer.json") if (folder / "tokenizer.json").is_file() else {}
    vocabulary = folder / "assets" / "tokenizer" / "vocabulary.txt"
    if spec.get("class_name") != "BertTokenizer" or not vocabulary.is_file():
        raise BackboneError(f"the KerasHub preset {model_name!r} has no BertTokenizer WordPiece vocabulary "
                            f"(tokenizer.json, assets/tokenizer/vocabulary.txt); tunewise tokenizes with Hugging Face "
                            "tokenizers and adapts only that one. Use the model's Hugging Face folder: keras:FOLDER.")
    settings = spec.get("config", {})
    # transformers 5 takes the vocabulary itself (and ignores vocab_file); 4 takes its file
    given = {"vocab": {token: i for i, token in enumerate(vocabulary.read_text(encoding="utf-8").splitlines())}} \
        if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else {"vocab_file": str(vocabulary)}
    return BertTokenizerFast(**given, do_lower_case=bool(settings.get("lowercase", False)),
                             strip_accents=bool(settings.get("strip_accents", False)),
                             tokenize_chinese_chars=bool(settings.get("split_on_cjk", True)),
                             unk_token=settings.get("oov_token", "[UNK]"))


def presets(model_class: Any) -> dict[str, str]:
    """A KerasHub model class's built-in presets (BertBackbone's, ImageClassifier's): name -> Kaggle handle."""
    return {name: spec["kaggle_handle"] for name, spec in model_class.presets.items()}


def download_preset(name: str, handle: str, offline: str = "a Hugging Face BERT folder (keras:FOLDER, e.g. the MiniLM "
              "folder of pkg:minilm)") -> Path:
    """The preset's folder, downloaded from Kaggle once (kagglehub keeps it), or a BackboneError at once
    without a network (saying to pass `offline` or a preset folder instead)."""
    from tunewise.backbones import network

    handle = handle.removeprefix("kaggle://")
    cache = Path(os.environ.get("KAGGLEHUB_CACHE", "~/.cache/kagglehub")).expanduser()
    if not (cache / "models" / handle).is_dir() and not network.reachable(KAGGLE):
        raise BackboneError(f"cannot download the KerasHub preset {name!r}: {KAGGLE} is not reachable (no "
                            f"network?). Offline, pass {offline} or a KerasHub preset folder written by "
                            "save_to_preset.")
    try:
        import kagglehub
    except ImportError:
        raise BackboneError(f"downloading the KerasHub preset {name!r} needs kagglehub: pip install kagglehub") \
            from None
    try:
        return Path(kagglehub.model_download(handle))
    except Exception as err:  # a download failure, as kagglehub reports it
        raise BackboneError(f"cannot download the KerasHub preset {name!r}: {one_line(err)}") from None


def _backbone(backbone: Any, hf_config: Any, tokenizer: PreTrainedTokenizerBase, model_name: str,
              pretrained: bool) -> Backbone:
    module = KerasText(backbone, hf_config)
    limit = int(backbone.max_sequence_length)
    if 0 < tokenizer.model_max_length < 100_000:  # unset limits come as huge sentinels
        limit = min(limit, tokenizer.model_max_length)
    return Backbone(name=f"keras:{model_name}", arch=f"keras:{model_name}", model=module,
                    num_features=int(backbone.hidden_dim), layer_groups=layer_groups(module),
                    preprocess=Tokenize(tokenizer, name=f"keras:{model_name}",
                                        max_length=min(DEFAULT_MAX_LENGTH, limit), limit=limit),
                    head_key="classifier", pretrained=pretrained)

