"""`hf:<hub id or folder>`: Hugging Face encoders (BERT, RoBERTa, MiniLM, MPNet, ...) and decoder-only
generators (GPT-2, Llama, SmolLM2, Qwen, ...), with their tokenizers.

The network is wrapped as a `TextEncoder` (a `TextDecoder` for a generator): a batch of token ids
in, pooled features (B, H) or token features (B, T, H) out, so tasks and strategies treat it like
any other backbone. A generator's language-model head is its `source_head` (causal_lm trains it).
Remote code is never run unless TUNEWISE_TRUST_REMOTE_CODE=1 is set.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from tunewise.backbones import SOURCES
from tunewise.backbones.base import Backbone, read_state_dict
from tunewise.backbones.network import offline_message, reachable
from tunewise.errors import BackboneError, ConfigError, one_line

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MAX_LENGTH = 256


@dataclass(frozen=True)
class Tokenize:
    """A text backbone's input pipeline: its tokenizer and how many tokens an input may have.

    Args:
        tokenizer: the pretrained tokenizer (not part of the cache key; `name` is).
        name: where the tokenizer came from.
        max_length: inputs are truncated (QA contexts windowed) to this many tokens.
        limit: the model's own maximum (its position embeddings).
        doc_stride: question answering: tokens shared by consecutive windows.
    """

    tokenizer: PreTrainedTokenizerBase = field(repr=False, compare=False)
    name: str
    max_length: int = DEFAULT_MAX_LENGTH
    limit: int = 512
    doc_stride: int = 128

    def configured(self, max_length: int, doc_stride: int, asked: bool) -> Tokenize:
        """At another length and stride. A length the user `asked` for must fit the model; a
        default one is capped at the model's limit.

        Raises:
            ConfigError: an asked length above the model's limit.
        """
        if asked and max_length > self.limit:
            raise ConfigError(f"--max-length {max_length} is more than this model allows ({self.limit} tokens, its "
                              f"position embeddings). Pass --max-length {self.limit} or less.")
        return replace(self, max_length=min(max_length, self.limit), doc_stride=doc_stride)


class TextEncoder(nn.Module):
    """A transformers encoder as a backbone.

    Shape: inputs {input_ids, attention_mask[, token_type_ids]} (B, T) -> (B, H) when `tokens`
    is False (the model's pooler output, else the first token's state), (B, T, H) when True.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.tokens = False

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    def use_tokens(self) -> None:
        """Token features from now on; the pooler (unused then) is dropped, as the token and QA
        heads of transformers drop it."""
        self.tokens = True
        if getattr(self.model, "pooler", None) is not None:
            self.model.register_module("pooler", None)  # `.pooler = None`, which torch's types refuse

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(**inputs)
        if self.tokens:
            return out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]


class TextDecoder(TextEncoder):
    """A decoder-only generator's transformer (without its LM head) as a backbone: pooled features are
    the last real token's state, the one token that has read the whole input (inputs padded on the
    right)."""

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        states = self.model(**inputs).last_hidden_state
        if self.tokens:
            return states
        last = inputs["attention_mask"].sum(1) - 1 if "attention_mask" in inputs else \
            torch.full(states.shape[:1], states.shape[1] - 1, device=states.device)
        return states[torch.arange(len(states), device=states.device), last]


def is_generator(config) -> bool:
    """A decoder-only causal LM (GPT-2, Llama, SmolLM2, Qwen, ...), by the model class its config names."""
    return not getattr(config, "is_encoder_decoder", False) and any(
        name.endswith(("ForCausalLM", "LMHeadModel")) for name in getattr(config, "architectures", None) or ())


def decoder_only(config) -> bool:
    """An architecture that reads left to right only (GPT-2, Llama, Qwen; not BERT, which also has a
    causal-LM class but is read both ways): its pooled feature is the last token's."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", None)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


@SOURCES.register("hf")
def load(model_name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """A Hugging Face encoder or decoder-only generator by hub id (`bert-base-uncased`, `gpt2`) or local folder."""
    return from_pretrained(model_name, name=f"hf:{model_name}", pretrained=pretrained, weights=weights)


def from_pretrained(path: str, name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """Load config, tokenizer and (unless `pretrained` is False) weights from a hub id or folder."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # our own bars say what is happening
    _check_reachable(path)
    trust = os.environ.get("TUNEWISE_TRUST_REMOTE_CODE") == "1"
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        auto = AutoModelForCausalLM if is_generator(config) else AutoModel  # a generator keeps its LM head
        if pretrained and weights is None:
            model = auto.from_pretrained(path, config=config, trust_remote_code=trust)
        else:
            model = auto.from_config(config, trust_remote_code=trust)
    except (OSError, ValueError) as err:
        if not trust and "trust_remote_code" in str(err):
            raise BackboneError(f"the Hugging Face model {path!r} needs its own Python code (config.json's "
                                "auto_map), and tunewise runs none unless told to. Read that code; to run it, set "
                                "TUNEWISE_TRUST_REMOTE_CODE=1.") from None
        raise BackboneError(f"cannot load the Hugging Face model {path!r}: {one_line(err)}. Pass a hub id "
                            "(bert-base-uncased) or a folder holding config.json, the weights and "
                            "the tokenizer files.") from None
    if weights is not None:
        load_encoder_weights(model, read_state_dict(weights), str(weights))
    return from_transformers(model, tokenizer, name=name, path=path, pretrained=pretrained)


def from_transformers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str, path: str,
                      pretrained: bool) -> Backbone:
    """Wrap a transformers encoder (AutoModel), or a generator (AutoModelForCausalLM: its transformer the
    backbone, its LM head the source head), and its tokenizer as a Backbone."""
    generator = is_generator(model.config)
    encoder = TextDecoder(cast("PreTrainedModel", model.base_model)) if generator else TextEncoder(model)
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    limit = int(positions or 512)  # GPT-2 names it n_positions
    if 0 < tokenizer.model_max_length < 100_000:  # unset limits come as huge sentinels
        limit = min(limit, tokenizer.model_max_length)
    if generator and tokenizer.pad_token is None:  # GPT-2 has none; batches pad on the right, masked
        tokenizer.pad_token = tokenizer.eos_token
    return Backbone(
        name=name,
        arch=f"hf:{path}",
        model=encoder,
        num_features=model.config.hidden_size,
        layer_groups=layer_groups(encoder),
        preprocess=Tokenize(tokenizer, name=path, max_length=min(DEFAULT_MAX_LENGTH, limit), limit=limit),
        source_head=model.get_output_embeddings() if generator else None,
        head_key="lm_head" if generator else "classifier",
        pretrained=pretrained,
    )


def layer_groups(encoder: nn.Module) -> list[list[str]]:
    """Embeddings, then each numbered transformer layer, then the rest (pooler, final norms)."""
    embeddings: list[str] = []
    layers: dict[int, list[str]] = {}
    rest: list[str] = []
    for name, _ in encoder.named_parameters():
        number = re.search(r"\.(?:layers?|h)\.(\d+)\.", name)  # BERT's layer.N, Llama's layers.N, GPT-2's h.N
        if re.search(r"embed|\.wte\.|\.wpe\.", name):
            embeddings.append(name)
        elif number:
            layers.setdefault(int(number.group(1)), []).append(name)
        else:
            rest.append(name)
    return [g for g in (embeddings, *(layers[i] for i in sorted(layers)), rest) if g]


def load_encoder_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Load an encoder's tensors, also from a task model's checkpoint (`bert.encoder...` keys)."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    state = {k.removeprefix(prefix): v for k, v in state.items()}
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.startswith("pooler.") and "position_ids" not in k]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise BackboneError(f"weights in {path!r} do not fit this encoder: {len(missing)} tensors missing or of "
                            f"another shape ({shown}). Pass weights saved from the same architecture.")
    model.load_state_dict(usable, strict=False)


def _check_reachable(path: str) -> None:
    """A hub id that is neither a folder nor cached fails at once when the hub is unreachable."""
    if Path(path).is_dir():
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        return
    if not reachable(constants.ENDPOINT):
        raise BackboneError(offline_message(f"hf:{path}", constants.ENDPOINT).replace(
            "pkg:efficientnet_lite0", "pkg:minilm (text) or pkg:efficientnet_lite0 (images)"))
