"""`random:<source:model>`: the same architecture with random weights, as a deliberately weak
candidate in a ranking (what do the scorers say about features that learned nothing?)."""

from __future__ import annotations

from pathlib import Path

from tunewise.backbones import SOURCES, Backbone
from tunewise.errors import BackboneError


@SOURCES.register("random")
def load(model_name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """`random:timm:resnet18`, `random:pkg:efficientnet_lite0`: architecture only, never weights."""
    from tunewise.backbones import load_backbone

    if weights is not None:
        raise BackboneError("random: models take no --weights; drop the random: prefix to load weights.")
    import random

    import torch

    state = random.getstate()  # Keras draws its initializers' seeds from Python's generator
    with torch.random.fork_rng():  # the same random weights every time: rankings and caches repeat
        torch.manual_seed(0)
        random.seed(0)
        try:
            backbone = load_backbone(model_name, pretrained=False)
        finally:
            random.setstate(state)
    backbone.name, backbone.source_head = f"random:{model_name}", None
    return backbone
