"""The fine-tuned model as the ecosystem loads it.

Images: `model.safetensors` holds the backbone under its original names and the new head under
the source classifier's name, so `timm.create_model(arch, num_classes=C)` (or torchvision's
`get_model(arch, num_classes=C)`) loads it with `load_state_dict`. Text: the folder is a
transformers checkpoint (`save_pretrained`, tokenizer included), so
`transformers.pipeline("text-classification", model=folder)` loads it. `model.json` beside
either records what tunewise needs to rebuild it (task, classes, preprocessing).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import save_file

from tunewise.backbones import Backbone, Preprocess, load_backbone
from tunewise.backbones.hf import TextDecoder, TextEncoder, Tokenize, decoder_only
from tunewise.errors import TunewiseError
from tunewise.export_check import (
    check_transformers,
    check_weights,
    load_weights,
    read_model_json,
    transformers_files,
)
from tunewise.io import failed_write, write_atomic, write_json
from tunewise.tasks import Task, TaskModel, get_task, task_for

log = logging.getLogger("tunewise")


def native_state_dict(model: TaskModel, head_key: str) -> dict[str, torch.Tensor]:
    """The state dict under the source's own names, contiguous copies for safetensors."""
    return {native_name(key, head_key): tensor.detach().cpu().contiguous()
            for key, tensor in model.state_dict().items()}


def native_name(key: str, head_key: str) -> str:
    """`backbone.x` -> `x` and `head.y` -> `{head_key}.y`: the name timm or torchvision gives it."""
    part, _, rest = key.partition(".")
    return rest if part == "backbone" else f"{head_key}.{rest}"


def export_model(model: TaskModel, backbone: Backbone, preprocess: Preprocess | Tokenize, task: Task,
                 classes: list[str], folder: Path, facts: dict | None = None) -> None:
    """Write model.safetensors and model.json into `folder`, each atomically."""
    if isinstance(preprocess, Tokenize):
        write_native(model, folder)
        try:
            export_transformers(model, preprocess, task, classes, folder)
        except TunewiseError as err:  # the run itself is fine: say so, keep best.pt
            log.warning("%s", err)
            return
        write_json(folder / "model.json", {
            "format": "transformers", "source": backbone.name, "task": task.name, "classes": classes,
            "max_length": preprocess.max_length, "doc_stride": preprocess.doc_stride, **(facts or {})})
        return
    if task.dense:
        export_dense(model, backbone, preprocess, task, classes, folder)
        return
    state = native_state_dict(model, backbone.head_key)
    metadata = {"tunewise.arch": backbone.arch, "tunewise.head_key": backbone.head_key,
                "tunewise.num_classes": str(len(classes))}
    write_atomic(folder / "model.safetensors", lambda tmp: save_file(state, tmp, metadata=metadata))
    write_json(folder / "model.json", {
        "arch": backbone.arch, "source": backbone.name, "head_key": backbone.head_key,
        "task": task.name, "classes": classes, "preprocess": asdict(preprocess),
    })
    write_native(model, folder)
    write_readme(folder, backbone.arch, preprocess, classes, getattr(model.backbone, "usage", None))


def write_native(model: TaskModel, folder: Path) -> None:
    """A backbone from another framework (Keras) also writes that framework's own file, with the head."""
    save = getattr(model.backbone, "save_with_head", None)
    if save is not None:
        write_atomic(folder / str(model.backbone.native_file), lambda tmp: save(model.head, tmp))


def write_readme(folder: Path, arch: str, preprocess: Preprocess, classes: list[str], usage: str | None = None) -> None:
    """README.md beside an image classifier's export: how timm or torchvision load it (or `usage`: how
    a backbone from another framework loads its own file), and the input it was tuned at (which may
    differ from the architecture's default size)."""
    library, _, name = arch.partition(":")
    build = (f'timm.create_model("{name}", num_classes={len(classes)})' if library == "timm" else
             f'torchvision.models.get_model("{name}", num_classes={len(classes)})')
    usage = usage or f"""import {library}
from safetensors.torch import load_file
model = {build}
model.load_state_dict(load_file("model.safetensors"))
model.eval()"""
    p = preprocess
    text = f"""# {name}, fine-tuned by tunewise: {len(classes)} classes

Tuned at **{p.input_size} x {p.input_size} px**: resize the shorter side to {p.resize_size} px
({p.interpolation}), centre-crop {p.input_size} px, scale to [0, 1], normalize with mean
{list(p.mean)} and std {list(p.std)}. Other sizes run, but the validation figures were measured at
this one.

```python
{usage}
```

Classes, in the order of the outputs: {", ".join(classes)}.
With tunewise: `tunewise predict THIS_FOLDER IMAGE...`, `tunewise serve THIS_FOLDER`.
"""
    write_atomic(folder / "README.md", lambda tmp: Path(tmp).write_text(text))


def export_dense(model, backbone: Backbone, preprocess, task: Task, classes: list[str], folder: Path) -> None:
    """Detection and segmentation: the whole model's state dict (`backbone.` = the pretrained
    network's own names under `body.`, `head.` = torchvision's detector or the decoder);
    `tunewise.load_model(folder)` rebuilds it, and the safetensors file reads anywhere."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"tunewise.arch": backbone.arch, "tunewise.task": task.name, "tunewise.num_classes": str(len(classes))}
    write_atomic(folder / "model.safetensors", lambda tmp: save_file(state, tmp, metadata=metadata))
    write_json(folder / "model.json", {"format": "tunewise", "arch": backbone.arch, "source": backbone.name,
                                       "task": task.name, "classes": classes, "preprocess": asdict(preprocess),
                                       "pretrained": backbone.pretrained,  # BatchNorm frozen, or not
                                       **task.knobs()})


def export_transformers(model: TaskModel, preprocess: Tokenize, task: Task, classes: list[str], folder: Path) -> None:
    """Save encoder + head as transformers' own task model (and the tokenizer) into `folder`.

    The head must sit where the task class expects it and give the same outputs: checked on a
    probe sentence, so an architecture whose head differs (RoBERTa's two-layer classifier) is
    refused rather than exported wrong.
    """
    import transformers

    if task.transformers_head is None:
        raise TunewiseError(f"{task.name} has no transformers task class to export to. The run's best.pt holds "
                            "the weights.")
    auto_name, head_name = task.transformers_head
    own = getattr(model.backbone, "transformers_model", None)  # a backbone of another framework's layers (keras:)
    encoder = own() if own is not None else cast(TextEncoder, model.backbone).model  # a text task's backbone
    config = copy.deepcopy(encoder.config)
    if task.labelled:
        config.num_labels = len(classes)
        config.id2label = dict(enumerate(classes))
        config.label2id = {c: i for i, c in enumerate(classes)}
    if config.pad_token_id is None:  # a generator's classifier finds each input's last token by it
        config.pad_token_id = preprocess.tokenizer.pad_token_id
    exported = getattr(transformers, auto_name).from_config(config)
    head_name = _head_name(exported, head_name)
    state = {f"{exported.base_model_prefix}.{k}": v for k, v in encoder.state_dict().items()}
    state |= {f"{head_name}.{k}": v for k, v in model.head.state_dict().items()}
    missing, unexpected = exported.load_state_dict(state, strict=False)
    if missing or unexpected or not _same_outputs(model, exported, preprocess):
        raise TunewiseError(f"cannot export a {config.model_type} {task.name} model in transformers' format: its "
                            f"{auto_name} head differs from tunewise's linear head ({len(missing)} missing, "
                            f"{len(unexpected)} unexpected tensors). The run's best.pt holds the weights.")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:  # each file lands whole
        try:
            exported.save_pretrained(tmp)
            preprocess.tokenizer.save_pretrained(tmp)
        except Exception as err:  # a full disk, as safetensors or the tokenizer report it
            error = failed_write(folder, err, shutil.disk_usage(tmp).free)
            if error is None:
                raise
            raise error from err
        for file in Path(tmp).iterdir():
            os.replace(file, folder / file.name)


def _head_name(exported, name: str) -> str:
    """Where `exported` keeps its head: `name` (BERT's classifier), or `score`, where transformers'
    generic classifiers of generators (Llama, Qwen, GPT-2) keep theirs."""
    return name if hasattr(exported, name) or not hasattr(exported, "score") else "score"


@torch.no_grad()
def _same_outputs(model: TaskModel, exported, preprocess: Tokenize) -> bool:
    device = next(model.parameters()).device  # compared where the model is; it is not moved
    inputs = {k: v.to(device) for k, v in preprocess.tokenizer(["Is this the same model?"], ["It should be."],
                                                                return_tensors="pt").items()}
    model_was, exported_was = model.training, exported.training
    model.eval(), exported.to(device).eval()
    ours = model(inputs)
    out = exported(**inputs)
    theirs = torch.stack([out.start_logits, out.end_logits], -1) if hasattr(out, "start_logits") else out.logits
    model.train(model_was), exported.train(exported_was)
    return torch.allclose(ours.float(), theirs.float(), atol=1e-4)


def load_transformers(folder: Path, info: dict) -> tuple[TaskModel, Tokenize]:
    """An exported transformers checkpoint as a TaskModel, with its tokenizer."""
    import transformers

    task = get_task(info["task"])
    check_transformers(folder, task)
    assert task.transformers_head is not None, "only a task with a transformers head exports this format"
    auto_name, head_name = task.transformers_head
    with transformers_files(folder):
        exported = getattr(transformers, auto_name).from_pretrained(folder)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    encoder = (TextDecoder if decoder_only(exported.config) else TextEncoder)(exported.base_model)
    encoder.tokens = task.per_token
    tokenize = Tokenize(tokenizer, name=str(folder), max_length=info["max_length"], doc_stride=info["doc_stride"])
    return task.model_of(encoder, getattr(exported, _head_name(exported, head_name))), tokenize


def model_info(path: str | Path) -> tuple[Path, dict]:
    """The export's folder and its model.json, without loading any weights.

    Raises:
        TunewiseError: `path` holds no exported model.
        RunFolderError: its model.json is not what export writes.
    """
    folder = model_folder(path)
    if not (folder / "model.json").is_file() or not (folder / "model.safetensors").is_file():
        raise TunewiseError(f"{str(path)!r} holds no exported model (model.safetensors and "
                            "model.json). Pass a run folder written by `tunewise fit`, or one written by "
                            "`tunewise search` (its winner is in model/).")
    return folder, read_model_json(folder)


def model_folder(path: str | Path) -> Path:
    """Where the model of `path` lies: a fit run folder itself, its model.safetensors' folder, or a
    search run folder's `model/` (its winner).

    Raises:
        TunewiseError: a search folder whose search has not yet picked its winner.
    """
    folder = Path(path)
    if folder.suffix == ".safetensors":
        return folder.parent
    if (folder / "trials").is_dir() or (folder / "leaderboard.json").is_file():  # a search's folder
        if not (folder / "model" / "model.json").is_file():
            raise TunewiseError(f"the search in {str(path)!r} has not picked its winner yet (no model/ folder). "
                                f"Finish it with: tunewise search --resume --out {path}")
        return folder / "model"
    return folder


def load_model(path: str | Path) -> tuple[TaskModel, dict]:
    """Rebuild an exported model from its folder (or its model.safetensors) for inference.

    Returns:
        The model in eval mode, and model.json's contents (classes, preprocess, task, arch).

    Raises:
        RunFolderError: model.json, or the weights' names and shapes, are not what export wrote.
    """
    folder, info = model_info(path)
    if info.get("format") == "transformers":
        model, info["preprocess"] = load_transformers(folder, info)
        return model.eval(), info
    settings: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in info["preprocess"].items()}
    preprocess = Preprocess(**settings)
    backbone = replace(load_backbone(info["arch"], pretrained=False), preprocess=preprocess,
                       pretrained=info.get("pretrained", True))  # dense models: the same BatchNorm layers
    task = task_for(info["task"], **info)  # its knobs (detector) as exported
    model = task.build_model(backbone, info["classes"])
    info["preprocess"] = preprocess
    # the file's names for the model's own: the same for a dense model, timm's or torchvision's otherwise
    names = {key if info.get("format") == "tunewise" else native_name(key, info["head_key"]): key
             for key in model.state_dict()}
    expected = model.state_dict(keep_vars=True)
    weights = folder / "model.safetensors"
    check_weights(weights, {name: expected[key] for name, key in names.items()},
                  f"a {info['arch']} {task.name} model of {len(info['classes'])} classes (model.json)")
    model.load_state_dict({names[name]: tensor for name, tensor in load_weights(weights).items()})
    return model.eval(), info
