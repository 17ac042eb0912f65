"""A weights file exported by tunewise: its metadata names the architecture to rebuild."""

from __future__ import annotations

import json
from pathlib import Path

from tunewise.backbones.base import Backbone
from tunewise.errors import BackboneError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def looks_like_path(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) or "/" in name or Path(name).exists()


def read_arch(path: Path) -> str | None:
    """The `tunewise.arch` metadata of a safetensors file, or of the model.json beside it."""
    from tunewise.export_check import read_model_json, unreadable  # it imports the tasks, which import us

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                arch = (f.metadata() or {}).get("tunewise.arch")
        except (SafetensorError, OSError) as err:
            raise unreadable(path, err) from None
        if arch:
            return arch
    sidecar = path.with_name("model.json")
    if not sidecar.is_file():
        return None
    if path.name == "model.safetensors":  # a tunewise export: its model.json is checked whole
        return read_model_json(sidecar.parent).get("arch")
    try:  # a weights file of the user's, beside a model.json that only names the architecture
        arch = json.loads(sidecar.read_bytes()).get("arch")
    except (ValueError, AttributeError) as err:
        raise unreadable(sidecar, err) from None
    return arch if isinstance(arch, str) else None


def load(name: str, pretrained: bool = True) -> Backbone:
    """Rebuild the recorded architecture and load the file's weights into it."""
    from tunewise.backbones import load_backbone

    path = Path(name)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise BackboneError(f"model {name!r} is neither a known model nor an existing file. "
                            "Pass source:model (timm:resnet50) or a weights file path.")
    arch = read_arch(path)
    if arch is None:
        raise BackboneError(
            f"{str(path)!r} does not record its architecture. Name it and pass the file as "
            f"weights: --model timm:ARCH --weights {path} (Python: load_backbone('timm:ARCH', "
            f"weights='{path}'))."
        )
    backbone = load_backbone(arch, pretrained=False, weights=path)
    backbone.name = str(path)
    backbone.pretrained = True
    return backbone
