"""Extract-once feature cache: a frozen backbone is a fixed function, so run it once per split.

Shared by linear probes (and later LP-FT, kNN and transferability ranking). A cache entry is
keyed by the backbone's weights, the preprocessing and the data, so any change recomputes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tunewise.backbones import Preprocess
from tunewise.data import ImageSet
from tunewise.io import write_atomic


def weights_digest(module: nn.Module) -> str:
    """A digest of every parameter and buffer (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_key(weights: str, preprocess: Preprocess, data: ImageSet) -> str:
    text = f"{weights}|{preprocess}|{data.fingerprint()}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@torch.inference_mode()
def extract_features(
    backbone: nn.Module,
    data: ImageSet,
    preprocess: Preprocess,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the backbone once over `data` with the eval transform.

    Shape: returns features (N, F) float32 and labels (N,) int64, in data order.
    """
    loader = DataLoader(
        data.with_transform(preprocess.eval_transform()),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    try:
        for images, targets in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None):
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                out = backbone(images.to(device, non_blocking=True))
            features.append(out.float().cpu())
            labels.append(targets)
    finally:
        backbone.train(was_training)
    return torch.cat(features), torch.cat(labels)


def cached_features(
    backbone: nn.Module,
    data: ImageSet,
    preprocess: Preprocess,
    device: torch.device,
    cache_dir: Path | None,
    batch_size: int = 64,
    num_workers: int = 0,
    desc: str = "features",
    weights: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`extract_features`, read from `cache_dir` when the same backbone, preprocessing and
    data were seen before, and written there otherwise. None disables the disk cache.

    Args:
        weights: the backbone's `weights_digest`, when the caller has it already.
    """
    if cache_dir is None:
        return extract_features(backbone, data, preprocess, device, batch_size, num_workers, desc)
    key = cache_key(weights or weights_digest(backbone), preprocess, data)
    path = Path(cache_dir) / f"{key}.safetensors"
    if path.is_file():
        stored = load_file(str(path))
        return stored["features"], stored["labels"]
    features, labels = extract_features(backbone, data, preprocess, device, batch_size, num_workers, desc)
    write_atomic(path, lambda tmp: save_file({"features": features, "labels": labels}, tmp))
    return features, labels
