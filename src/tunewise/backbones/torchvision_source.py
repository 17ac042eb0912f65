"""`torchvision:<model>`: torchvision's classification models and their weight presets."""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.error import URLError

import torch
import torchvision
from torch import nn

from tunewise.backbones import SOURCES
from tunewise.backbones.base import (
    Backbone,
    Preprocess,
    load_matching,
    parameter_groups,
    read_state_dict,
)
from tunewise.backbones.network import cached_url, offline_message, reachable
from tunewise.errors import BackboneError
from tunewise.registry import did_you_mean
from tunewise.safe_load import weights_only_loads, weights_refusal

HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")


@SOURCES.register("torchvision")
def load(model_name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """A torchvision classification model (`resnet50`, `vit_b_16`, `convnext_tiny`)."""
    known = torchvision.models.list_models(module=torchvision.models)
    if model_name not in known:
        raise BackboneError(
            f"unknown torchvision model {model_name!r}.{did_you_mean(model_name, known)} "
            f"Known: {', '.join(known[:8])}, ... ({len(known)} in all)."
        )
    preset = torchvision.models.get_model_weights(model_name).DEFAULT if pretrained else None
    download = preset if weights is None else None
    if download is not None and not cached_url(download.url) and not reachable(download.url):
        raise BackboneError(offline_message(f"torchvision:{model_name}", download.url))
    try:
        with weights_only_loads():  # torch.hub loads its cache with weights_only=False: force it on
            model = torchvision.models.get_model(model_name, weights=download)
    except pickle.UnpicklingError as err:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(download.url).name if download else model_name
        raise BackboneError(f"{weights_refusal(cached, err)} Delete it to download the official file again, "
                            "or pass your own weights with --weights.") from None
    except URLError as err:
        raise BackboneError(f"{offline_message(f'torchvision:{model_name}', 'the weight host')} ({err})") from None
    head_key = _last_linear_name(model)
    has_head = download is not None
    if weights is not None:
        has_head = load_matching(model, read_state_dict(weights), head_key, str(weights))
    head = model.get_submodule(head_key)
    model.set_submodule(head_key, nn.Identity())
    return Backbone(
        name=f"torchvision:{model_name}",
        arch=f"torchvision:{model_name}",
        model=model,
        num_features=head.in_features,
        layer_groups=parameter_groups(model),
        preprocess=_preprocess(preset),
        source_head=head if has_head else None,
        head_key=head_key,
        pretrained=pretrained,
    )


def _last_linear_name(model: nn.Module) -> str:
    """The classifier: the last nn.Linear inside the model's head attribute (`fc`, `classifier.1`)."""
    for attribute in HEAD_ATTRIBUTES:
        head = getattr(model, attribute, None)
        if head is None:
            continue
        linears = [n for n, m in head.named_modules() if isinstance(m, nn.Linear)]
        if linears:
            return f"{attribute}.{linears[-1]}".rstrip(".")
    raise BackboneError(
        f"{type(model).__name__} has no linear classifier under {', '.join(HEAD_ATTRIBUTES)}; "
        "tunewise cannot use it as a backbone. Try its timm: counterpart."
    )


def _preprocess(preset) -> Preprocess:
    if preset is None:
        return Preprocess()
    t = preset.transforms()
    return Preprocess(
        input_size=t.crop_size[0],
        resize_size=t.resize_size[0],
        mean=tuple(t.mean),
        std=tuple(t.std),
        interpolation=t.interpolation.value,
    )
