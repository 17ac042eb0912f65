"""evaluate() and predict() on an exported model: a run folder in, metrics or labels out."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tunewise.config import DataConfig
from tunewise.data import ImageSet, load_data
from tunewise.data.image_folder import IMAGE_SUFFIXES
from tunewise.errors import DataError, TunewiseError
from tunewise.export import load_model
from tunewise.tasks import get_task


def evaluate(run: str | Path, data: str | DataConfig, split: str = "test", batch_size: int = 64) -> dict:
    """The task metrics of the model in `run` on one split of `data`.

    Raises:
        TunewiseError: no such split, or classes that differ from the model's.
    """
    model, info = load_model(run)
    splits = load_data(data if isinstance(data, DataConfig) else DataConfig(data=data))
    named = splits.named()
    if split not in named:
        raise TunewiseError(f"data has no {split!r} split; it has {', '.join(named)}.")
    if splits.classes != info["classes"]:
        raise TunewiseError(f"the data's classes {splits.classes} differ from the model's "
                            f"{info['classes']}. Evaluate on data with the same class folders.")
    task = get_task(info["task"])
    outputs, targets = _run(model, named[split].with_transform(info["preprocess"].eval_transform()), batch_size)
    return {"split": split, "images": len(targets), **task.metrics(outputs, targets)}


def predict(run: str | Path, inputs: list[str | Path], batch_size: int = 64) -> list[dict]:
    """Labels and class probabilities for image files or folders of images.

    Returns:
        One dict per image: path, label, probability, and every class's probability.
    """
    model, info = load_model(run)
    files = image_files(inputs)
    images = ImageSet(items=files, labels=[0] * len(files), classes=info["classes"], source="predict",
                      transform=info["preprocess"].eval_transform())
    logits, _ = _run(model, images, batch_size)
    probabilities = logits.softmax(1)
    rows = []
    for path, p in zip(files, probabilities, strict=True):
        best = int(p.argmax())
        rows.append({"path": str(path), "label": info["classes"][best], "probability": float(p[best]),
                     **{f"p_{c}": float(v) for c, v in zip(info["classes"], p, strict=True)}})
    return rows


def image_files(inputs: list[str | Path]) -> list[Path]:
    """Image files named directly, plus the images anywhere under named folders, sorted."""
    files: list[Path] = []
    for given in map(Path, inputs):
        if given.is_dir():
            files += sorted(p for p in given.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif given.is_file():
            files.append(given)
        else:
            raise DataError(f"{str(given)!r} does not exist. Pass image files or folders of images.")
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, inputs))} "
                        f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
    return files


@torch.no_grad()
def _run(model, data, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    outputs, targets = [], []
    for images, labels in DataLoader(data, batch_size=batch_size):
        outputs.append(model(images.to(device)).float().cpu())
        targets.append(torch.as_tensor(labels))
    if not outputs:
        raise TunewiseError("no images to run the model on.")
    return torch.cat(outputs), torch.cat(targets)
