"""What every backbone source hands back: the network, its layer groups and its preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn
from torchvision.transforms import v2

from tunewise.errors import BackboneError, one_line
from tunewise.safe_load import load_tensors

if TYPE_CHECKING:
    from tunewise.backbones.hf import Tokenize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """The input pipeline a pretrained network expects (timm's pretrained_cfg, torchvision's preset).

    Args:
        input_size: side of the square crop fed to the network, in pixels.
        resize_size: shorter side the image is resized to before the centre crop.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.
        interpolation: resampling used by resize.
    """

    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"

    def at_size(self, input_size: int) -> Preprocess:
        """The same pipeline at another resolution, keeping the crop ratio."""
        ratio = self.resize_size / self.input_size
        return replace(self, input_size=input_size, resize_size=round(input_size * ratio))

    def _mode(self) -> v2.InterpolationMode:
        return v2.InterpolationMode(self.interpolation)

    def _to_normalized_tensor(self) -> list[v2.Transform]:
        return [v2.ToImage(), *self.scale_steps()]

    def scale_steps(self) -> list[v2.Transform]:
        """uint8 (3, H, W) -> float, scaled to [0, 1] and normalized."""
        identity = tuple(self.mean) == (0, 0, 0) and tuple(self.std) == (1, 1, 1)  # Keras models: [0, 1] as is
        return [v2.ToDtype(torch.float32, scale=True), *([] if identity else [v2.Normalize(self.mean, self.std)])]

    def pixel_steps(self) -> list[v2.Transform]:
        """PIL image -> resized, centre-cropped uint8 (3, H, W): the evaluation pipeline before scaling."""
        return [v2.RGB(), v2.Resize(self.resize_size, interpolation=self._mode(), antialias=True),
                v2.CenterCrop(self.input_size), v2.ToImage()]

    def eval_transform(self) -> v2.Compose:
        """Resize, centre crop, scale, normalize: PIL image -> (3, H, W) float tensor."""
        return v2.Compose([*self.pixel_steps(), *self.scale_steps()])

    def train_transform(self) -> v2.Compose:
        """Light augmentation for runs that train the backbone: random resized crop and flip."""
        return v2.Compose(
            [
                v2.RGB(),
                v2.RandomResizedCrop(
                    self.input_size, scale=(0.5, 1.0), interpolation=self._mode(), antialias=True
                ),
                v2.RandomHorizontalFlip(),
                *self._to_normalized_tensor(),
            ]
        )


@dataclass
class Backbone:
    """A pretrained network without its classifier, plus what fine-tuning needs.

    Args:
        name: the name it was loaded by (`timm:resnet50`).
        arch: how to rebuild the same architecture (`timm:resnet50`), also for local weights.
        model: images (B, 3, H, W) -> pooled features (B, num_features).
        num_features: width of the features.
        layer_groups: parameter names of `model`, grouped from input to output.
        preprocess: the input pipeline of the pretrained weights (a text backbone's: its tokenizer).
        source_head: the pretrained classifier on top of the features, where there is one.
        head_key: the state-dict prefix the source model uses for its classifier ("fc",
            "classifier"): exports put the new head there, so the ecosystem's own
            `create_model(arch, num_classes=C)` loads them.
    """

    name: str
    arch: str
    model: nn.Module
    num_features: int
    layer_groups: list[list[str]]
    preprocess: Preprocess | Tokenize
    source_head: nn.Module | None = None
    head_key: str = "head"
    pretrained: bool = True


def parameter_groups(model: nn.Module) -> list[list[str]]:
    """Group parameter names by top-level child, input to output, opening up a dominant child.

    A child holding more than half of the parameters (a ViT's `encoder`, a CNN's `features`)
    is split into its own children, so groups stay comparable in size. Parameters owned
    directly by an opened module (a class token, a position embedding) join its first group.
    """
    total = sum(p.numel() for p in model.parameters())
    groups: list[list[str]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        first = len(groups)
        for child_name, child in module.named_children():
            names = [f"{prefix}{child_name}.{n}" for n, _ in child.named_parameters()]
            if not names:
                continue
            size = sum(p.numel() for p in child.parameters())
            with_params = [c for c in child.children() if any(True for _ in c.parameters())]
            if size > total / 2 and len(with_params) >= 2:
                visit(child, f"{prefix}{child_name}.")
            else:
                groups.append(names)
        own = [f"{prefix}{n}" for n, _ in module.named_parameters(recurse=False)]
        if own and first < len(groups):
            groups[first] = own + groups[first]
        elif own:
            groups.append(own)

    visit(model, "")
    return groups


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or a .pth/.pt/.bin read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file {str(path)!r} does not exist. Pass the path of a "
                            ".safetensors or .pth file.")
    fix = "Pass a .safetensors file, or a .pth state dict saved with torch.save(model.state_dict(), path)."
    if path.suffix != ".safetensors":
        state = load_tensors(path, BackboneError, fix)  # weights_only: a crafted .pth runs nothing
    else:
        try:
            from safetensors.torch import load_file

            state = load_file(str(path))
        except Exception as err:  # any reader failure means the file is not usable weights
            raise BackboneError(f"cannot read weights from {str(path)!r}: {one_line(err)}. {fix}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{str(path)!r} does not hold a state dict of tensors.")
    return state


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], head_key: str, path: str) -> bool:
    """Load `state` into `model`; the classifier may be absent, nothing else.

    A classifier for another number of classes (a fine-tuned export) replaces the model's.

    Returns:
        Whether the classifier was loaded too (then it is a usable source head).

    Raises:
        BackboneError: a backbone tensor is missing or has another shape; names a few.
    """
    head_weight = state.get(f"{head_key}.weight")
    head = model.get_submodule(head_key)
    if isinstance(head, nn.Linear) and head_weight is not None and head_weight.ndim == 2 \
            and head_weight.shape != head.weight.shape and head_weight.shape[1] == head.in_features:
        model.set_submodule(head_key, nn.Linear(head.in_features, head_weight.shape[0]))
    own = model.state_dict()
    is_head = lambda k: k == head_key or k.startswith(head_key + ".")  # noqa: E731
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not is_head(k)]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise BackboneError(
            f"weights in {path!r} do not fit this architecture: {len(missing)} tensors missing or "
            f"of another shape ({shown}). Pass weights saved from the same architecture."
        )
    model.load_state_dict(usable, strict=False)
    return all(k in usable for k in own if is_head(k))
