"""The fine-tuned model as the ecosystem loads it: safetensors with the source's own key names.

`model.safetensors` holds the backbone under its original names and the new head under the
source classifier's name, so `timm.create_model(arch, num_classes=C)` (or torchvision's
`get_model(arch, num_classes=C)`) loads it with `load_state_dict`. `model.json` beside it
records the architecture, classes and preprocessing that tunewise needs to rebuild it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tunewise.backbones import Backbone, Preprocess, load_backbone
from tunewise.errors import TunewiseError
from tunewise.io import write_atomic, write_json
from tunewise.tasks import TaskModel, get_task


def native_state_dict(model: TaskModel, head_key: str) -> dict[str, torch.Tensor]:
    """`backbone.x` -> `x` and `head.y` -> `{head_key}.y`, contiguous copies for safetensors."""
    renamed = {}
    for key, tensor in model.state_dict().items():
        part, _, rest = key.partition(".")
        renamed[rest if part == "backbone" else f"{head_key}.{rest}"] = tensor.detach().cpu().contiguous()
    return renamed


def export_model(model: TaskModel, backbone: Backbone, preprocess: Preprocess, task: str,
                 classes: list[str], folder: Path) -> None:
    """Write model.safetensors and model.json into `folder`, each atomically."""
    state = native_state_dict(model, backbone.head_key)
    metadata = {"tunewise.arch": backbone.arch, "tunewise.head_key": backbone.head_key,
                "tunewise.num_classes": str(len(classes))}
    write_atomic(folder / "model.safetensors", lambda tmp: save_file(state, tmp, metadata=metadata))
    write_json(folder / "model.json", {
        "arch": backbone.arch, "source": backbone.name, "head_key": backbone.head_key,
        "task": task, "classes": classes, "preprocess": asdict(preprocess),
    })


def load_model(path: str | Path) -> tuple[TaskModel, dict]:
    """Rebuild an exported model from its folder (or its model.safetensors) for inference.

    Returns:
        The model in eval mode, and model.json's contents (classes, preprocess, task, arch).
    """
    folder = Path(path)
    folder = folder.parent if folder.suffix == ".safetensors" else folder
    if not (folder / "model.json").is_file() or not (folder / "model.safetensors").is_file():
        raise TunewiseError(f"{str(path)!r} holds no exported model (model.safetensors and "
                            "model.json). Pass a run folder written by `tunewise fit`.")
    info = json.loads((folder / "model.json").read_text())
    backbone = load_backbone(info["arch"], pretrained=False)
    model = get_task(info["task"]).build_model(backbone, len(info["classes"]))
    state = load_file(str(folder / "model.safetensors"))
    head_key = info["head_key"]
    own = {}
    for key, tensor in state.items():
        if key.startswith(head_key + "."):
            own["head." + key[len(head_key) + 1:]] = tensor
        else:
            own["backbone." + key] = tensor
    model.load_state_dict(own)
    info["preprocess"] = Preprocess(**{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in info["preprocess"].items()})
    return model.eval(), info
