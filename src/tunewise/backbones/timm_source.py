"""`timm:<model>`: any timm architecture, pretrained weights through timm's own loader."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any, Protocol, cast

import timm
from timm.data import resolve_data_config
from timm.models import group_parameters
from torch import nn

from tunewise.backbones import SOURCES
from tunewise.backbones.base import Backbone, Preprocess, load_matching, read_state_dict
from tunewise.backbones.network import cached_url, offline_message, reachable
from tunewise.errors import BackboneError
from tunewise.registry import did_you_mean
from tunewise.safe_load import weights_only_loads, weights_refusal


@SOURCES.register("timm")
def load(model_name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """A timm model by name (`resnet50`, `vit_small_patch16_224.augreg_in21k`)."""
    arch = model_name.split(".")[0]
    if not timm.is_model(arch):
        raise BackboneError(
            f"unknown timm model {model_name!r}.{did_you_mean(arch, timm.list_models())} "
            "List them with: python -c 'import timm; print(timm.list_models(\"*resnet*\"))'."
        )
    download = pretrained and weights is None
    if download:
        _check_weights_reachable(model_name)
    try:
        with weights_only_loads():  # a file put in timm's or torch's cache runs nothing
            model = timm.create_model(model_name, pretrained=download)
    except pickle.UnpicklingError as err:
        raise BackboneError(f"{weights_refusal(f'the cached weights of timm:{model_name}', err)} Delete them "
                            "from the cache (torch.hub.get_dir() or the Hugging Face cache) to download "
                            "them again.") from None
    except (OSError, RuntimeError) as err:
        raise BackboneError(f"{offline_message('timm:' + model_name, 'the weight host')} ({err})") from None
    has_head = download
    if weights is not None:
        head_key = _timm(model).pretrained_cfg.get("classifier", "head")
        has_head = load_matching(model, read_state_dict(weights), head_key, str(weights))
    return from_timm(model, name=f"timm:{model_name}", pretrained=pretrained, has_head=has_head)


def from_timm(model: nn.Module, name: str, pretrained: bool, has_head: bool) -> Backbone:
    """Wrap a timm model (with its classifier still on) as a Backbone."""
    timm_model = _timm(model)
    head_key = timm_model.pretrained_cfg.get("classifier", "head")
    source_head = copy.deepcopy(timm_model.get_classifier()) if has_head else None
    timm_model.reset_classifier(0)
    groups = group_parameters(model, timm_model.group_matcher(coarse=True))
    preprocess = preprocess_of(resolve_data_config({}, model=model))
    return Backbone(
        name=name,
        arch=f"timm:{timm_model.pretrained_cfg.get('architecture', name.split(':', 1)[1])}",
        model=model,
        num_features=timm_model.num_features,
        layer_groups=[list(names) for names in groups.values()],
        preprocess=preprocess,
        source_head=source_head,
        head_key=head_key,
        pretrained=pretrained,
    )


def preprocess_of(data_cfg: dict[str, Any]) -> Preprocess:
    """timm's data config (resolve_data_config: from a model, or from the pretrained_cfg of a timm folder's
    config.json) as tunewise's Preprocess: resize to size / crop_pct, centre-crop, mean and std."""
    size = data_cfg["input_size"][-1]
    interpolation = data_cfg["interpolation"]
    return Preprocess(
        input_size=size,
        resize_size=round(size / data_cfg["crop_pct"]),
        mean=tuple(data_cfg["mean"]),
        std=tuple(data_cfg["std"]),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bilinear",
    )


class TimmModel(Protocol):
    """What every timm model has beyond nn.Module; timm's types leave it out (`create_model`
    returns nn.Module)."""

    pretrained_cfg: dict[str, Any]
    num_features: int

    def get_classifier(self) -> nn.Module: ...

    def reset_classifier(self, num_classes: int) -> None: ...

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]: ...


def _timm(model: nn.Module) -> TimmModel:
    return cast(TimmModel, model)


def _check_weights_reachable(model_name: str) -> None:
    """Raise at once when the weights are neither cached nor downloadable."""
    from huggingface_hub import constants, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        raise BackboneError(f"timm has no pretrained weights for {model_name!r}. "
                            "Use --strategy scratch, or --weights PATH.")
    if cfg.hf_hub_id:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(cfg.hf_hub_id, filename), str):
                return
        if not reachable(constants.ENDPOINT):
            raise BackboneError(offline_message(f"timm:{model_name}", constants.ENDPOINT))
    elif isinstance(cfg.url, str) and cfg.url and not cached_url(cfg.url) and not reachable(cfg.url):
        raise BackboneError(offline_message(f"timm:{model_name}", cfg.url))
