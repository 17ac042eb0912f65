"""Backbone sources, registered by name prefix: `timm:`, `torchvision:`, `pkg:`, or a local file.

Every source returns the same `Backbone`, so tasks and strategies never ask where it came from.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Protocol

from tunewise.backbones.base import Backbone, Preprocess
from tunewise.errors import BackboneError
from tunewise.registry import Registry, did_you_mean


class Source(Protocol):
    """What a backbone source registers: `load(model_name, pretrained=..., weights=...)`."""

    def __call__(self, model_name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone: ...


SOURCES: Registry[Source] = Registry("backbone source")

__all__ = ["Backbone", "Preprocess", "SOURCES", "load_backbone"]


def load_backbone(name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """Load a pretrained network without its head, plus what fine-tuning needs.

    Args:
        name: `source:model` (`timm:resnet50`, `torchvision:resnet50`, `pkg:efficientnet_lite0`,
            `hf:bert-base-uncased`, `pkg:minilm`, `random:timm:resnet18` for random weights) or the
            path of a checkpoint that tunewise exported.
        pretrained: load the source's pretrained weights; False gives a random init.
        weights: a local weights file (.safetensors, or .pth/.pt read with weights_only=True)
            loaded into the architecture instead of downloading.

    Raises:
        BackboneError: unknown source or model, weights that do not fit, or no network.
    """
    from tunewise.backbones import local

    for module in pkgutil.iter_modules(__path__):  # each source module registers itself: one file per source
        importlib.import_module(f"{__name__}.{module.name}")

    source, sep, model = name.partition(":")
    if sep and model and source in SOURCES:  # before paths: `hf:./my_bert` is a folder for hf
        return SOURCES.get(source)(model, pretrained=pretrained, weights=weights)
    if local.looks_like_path(name):
        return local.load(name, pretrained=pretrained)
    if not sep or not model:
        known = ", ".join(f"{s}:NAME" for s in SOURCES.names())
        raise BackboneError(
            f"model {name!r} has no source prefix.{did_you_mean(name, ['pkg:efficientnet_lite0'])} "
            f"Use one of {known}, or the path of a weights file."
        )
    return SOURCES.get(source)(model, pretrained=pretrained, weights=weights)
